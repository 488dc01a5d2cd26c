//! A hostile remote can take nothing: end-to-end tests with the real operator binary against
//! endpoints that redirect credentials elsewhere, send endless bodies or endless pages, or hang,
//! plus the apply-time id validation. The hostile servers are in `secprov_sim::hostile`.
mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use secprov::backend::coveo::CoveoClient;
use secprov::backend::http::HttpOptions;
use secprov::backend::jitsudo::JitsudoClient;
use secprov::backend::keystone::{KeystoneClient, KeystoneCredentials};
use secprov::error::RemoteErrorKind;
use secprov_sim::hostile::{HOSTILE_TOKEN, HostileMode, HostileServer};
use serde_json::Value;
use support::*;

const COVEO_KEY: &str = "hostile-test-coveo-key-7f3a";
const JITSUDO_KEY: &str = "hostile-test-jitsudo-key-91bd";
const KEYSTONE_PASSWORD: &str = "hostile-test-keystone-password-c0de";
const TENANT: &str = "2489e9ad-2ee2-4e00-8ec9-32d5f69181c0";

fn addr(ip: &str) -> SocketAddr {
    format!("{ip}:0").parse().unwrap()
}

/// A Secret (opted in as a credential) and a connection of `backend` named `name` to
/// `endpoint`.
fn connection(backend: &str, name: &str, endpoint: &str) -> String {
    let (key, spec) = match backend {
        "coveo" => (
            COVEO_KEY,
            format!(
                "coveo: {{organizationId: org1, endpoint: '{endpoint}', apiKeySecretRef: {{name: {name}-cred, key: value}}}}"
            ),
        ),
        "jitsudo" => (
            JITSUDO_KEY,
            format!(
                "jitsudo: {{endpoint: '{endpoint}', tenantId: {TENANT}, apiKeySecretRef: {{name: {name}-cred, key: value}}}}"
            ),
        ),
        _ => (
            KEYSTONE_PASSWORD,
            format!(
                "keystone: {{authUrl: '{endpoint}/v3', scope: {{system: true}}, password: {{userName: admin, userDomainName: Default, passwordSecretRef: {{name: {name}-cred, key: value}}}}}}"
            ),
        ),
    };
    format!(
        "apiVersion: v1
kind: Secret
metadata:
  name: {name}-cred
  labels: {{secprov.dev/credential: \"true\"}}
type: Opaque
stringData:
  value: {key}
---
apiVersion: secprov.dev/v1alpha1
kind: ProviderConnection
metadata:
  name: {name}
spec:
  timeoutSeconds: 5
  {spec}
"
    )
}

/// A SecurityProvider of `backend` on `connection`.
fn provider(backend: &str, name: &str, connection: &str) -> String {
    let block = match backend {
        "coveo" => "coveo: {}".to_owned(),
        "jitsudo" => "jitsudo: {providerType: okta, config: {domain: acme.okta.com}}".to_owned(),
        _ => "keystone: {remoteIds: ['https://idp.example.com']}".to_owned(),
    };
    security_provider(
        name,
        "",
        &format!("  connectionRef: {connection}\n  {block}\n"),
    )
}

/// The Ready condition of `resource` once it is False with `reason`.
fn wait_not_ready(ns: &TestNamespace, op: &Operator, resource: &str, reason: &str) -> Value {
    let obj = ns.wait_reason_logged(resource, "Ready", reason, Duration::from_secs(90), op);
    let ready = condition(&obj, "Ready").unwrap().clone();
    assert_eq!(ready["status"], "False", "{resource} Ready/{reason}");
    ready
}

/// Credentials never follow a redirect: a 307 from each backend's endpoint to another loopback
/// host (127.0.0.2), which records everything it receives, receives nothing; the endpoint saw
/// the credentials (so the operator did call it) and the connection says why it stopped.
#[test]
fn redirects_to_another_host_receive_no_credentials() {
    let rt = runtime();
    let recorder = rt
        .block_on(HostileServer::start(addr("127.0.0.2"), HostileMode::Record))
        .expect("bind 127.0.0.2 (Linux routes all of 127.0.0.0/8 to lo)");
    let redirect = |issue_tokens| {
        rt.block_on(HostileServer::start(
            addr("127.0.0.1"),
            HostileMode::RedirectTo {
                target: recorder.base_url(),
                issue_tokens,
            },
        ))
        .unwrap()
    };
    // The connection check meets the redirect, except with a token issued first: then the
    // provider's first API call (carrying the token) does.
    let endpoints = [
        (
            "coveo",
            "coveo",
            redirect(false),
            "providerconnection/coveo",
        ),
        (
            "jitsudo",
            "jitsudo",
            redirect(false),
            "providerconnection/jitsudo",
        ),
        (
            "keystone",
            "keystone-password",
            redirect(false),
            "providerconnection/keystone-password",
        ),
        (
            "keystone",
            "keystone-token",
            redirect(true),
            "securityprovider/keystone-token-p",
        ),
    ];
    let ns = TestNamespace::new("hostile-redirect");
    for (backend, name, server, _) in &endpoints {
        ns.apply(&connection(backend, name, &server.base_url()))
            .unwrap();
        ns.apply(&provider(backend, &format!("{name}-p"), name))
            .unwrap();
    }
    let op = Operator::start(&ns.name, &["--connection-check-interval", "2s"]);
    for (_, name, server, resource) in &endpoints {
        let ready = wait_not_ready(&ns, &op, resource, "RemoteRejected");
        let message = ready["message"].as_str().unwrap_or_default();
        assert!(message.contains("redirect"), "{name}: {message}");
        assert!(
            !server.received().is_empty(),
            "{name}: the endpoint was never called"
        );
    }
    let secrets = [COVEO_KEY, JITSUDO_KEY, KEYSTONE_PASSWORD, HOSTILE_TOKEN];
    // The token endpoint did hand out a token, and the redirected API call carried it.
    assert!(
        endpoints[3]
            .2
            .received()
            .iter()
            .any(|r| r.contains(HOSTILE_TOKEN))
    );
    let leaked: Vec<_> = recorder.received();
    assert!(
        leaked.is_empty(),
        "the redirect target received {} requests; credentials among them: {:?}",
        leaked.len(),
        secrets
            .iter()
            .filter(|s| leaked.iter().any(|r| r.contains(s)))
            .collect::<Vec<_>>()
    );
    let log = op.log_text();
    for secret in secrets {
        assert!(!log.contains(secret), "the log contains a credential");
    }
}

/// Resident set size of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// An endpoint whose answers never end (every backend, connection check and provider read):
/// the operator stops reading at its cap, reports `RemoteBadResponse`, and its memory stays
/// small while the remote keeps sending.
#[test]
fn endless_bodies_are_cut_off_and_memory_stays_bounded() {
    let rt = runtime();
    let server = hostile_server(&rt, HostileMode::EndlessBody);
    let ns = TestNamespace::new("hostile-body");
    for backend in ["coveo", "jitsudo", "keystone"] {
        ns.apply(&connection(backend, backend, &server.base_url()))
            .unwrap();
    }
    let mut op = Operator::start(&ns.name, &["--connection-check-interval", "2s"]);
    let mut peak = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 2 || Instant::now() < deadline {
        for backend in ["coveo", "jitsudo"] {
            if let Some(obj) = ns.get_json(&format!("providerconnection/{backend}"))
                && condition(&obj, "Ready").is_some_and(|c| c["reason"] == "RemoteBadResponse")
            {
                seen.insert(backend);
            }
        }
        peak = peak.max(rss_kib(op.pid()));
        assert!(op.is_running(), "the operator died:\n{}", op.log_text());
        assert!(
            Instant::now() < deadline + Duration::from_secs(70),
            "connections not BadResponse: {seen:?}\n{}",
            op.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Keystone's token request succeeds; the endless body comes on the first API call.
    ns.apply(&provider("keystone", "keystone-p", "keystone"))
        .unwrap();
    wait_not_ready(&ns, &op, "securityprovider/keystone-p", "RemoteBadResponse");
    peak = peak.max(rss_kib(op.pid()));
    let sent = server.received().len();
    assert!(sent >= 3, "only {sent} requests reached the endless server");
    eprintln!(
        "operator peak RSS {} MiB over {sent} endless responses",
        peak / 1024
    );
    assert!(peak > 0 && peak < 150 * 1024, "peak RSS {peak} KiB");
    let obj = ns.get_json("providerconnection/coveo").unwrap();
    let message = condition_message(&obj, "Ready");
    assert!(message.contains("larger than"), "{message}");
    op.kill();
}

/// Endless pagination ends in an error for each backend, after a bounded number of pages.
#[test]
fn endless_pagination_ends_in_an_error_for_every_backend() {
    let rt = runtime();
    let server = hostile_server(&rt, HostileMode::EndlessPages);
    let options = HttpOptions {
        requests_per_second: 10_000,
        burst: 10_000,
        ..HttpOptions::default()
    };
    let base = server.base_url();
    let coveo = CoveoClient::new(&base, "org1", COVEO_KEY.into(), &options).unwrap();
    let jitsudo = JitsudoClient::new(&base, TENANT, JITSUDO_KEY.into(), &options).unwrap();
    let keystone = KeystoneClient::new(
        &base,
        KeystoneCredentials::Password {
            user_name: "admin".into(),
            user_domain_name: "Default".into(),
            password: KEYSTONE_PASSWORD.into(),
        },
        None,
        &options,
    )
    .unwrap();
    let check = |what: &str, result: Result<usize, secprov::error::RemoteError>| {
        let err = result.expect_err(what);
        assert_eq!(err.kind, RemoteErrorKind::BadResponse, "{what}: {err}");
        assert!(err.message.contains("did not end"), "{what}: {err}");
    };
    rt.block_on(async {
        let before = server.pages_served();
        check("coveo list", coveo.list().await.map(|l| l.len()));
        let coveo_pages = server.pages_served() - before;
        assert_eq!(coveo_pages, secprov::backend::coveo::MAX_LIST_PAGES as u64);
        let before = server.pages_served();
        check("jitsudo list", jitsudo.list().await.map(|l| l.len()));
        let jitsudo_pages = server.pages_served() - before;
        assert_eq!(
            jitsudo_pages,
            secprov::backend::jitsudo::MAX_LIST_PAGES as u64
        );
        let before = server.pages_served();
        check("keystone list", keystone.list().await.map(|l| l.len()));
        let keystone_pages = server.pages_served() - before;
        assert_eq!(
            keystone_pages,
            secprov::backend::keystone::MAX_LIST_PAGES as u64
        );
        // JITSudo's lookup by name walks the same pages.
        let found = jitsudo.find_by_name("absent", 250).await;
        assert!(found.is_err(), "find_by_name: {found:?}");
    });
}

/// Ids that are not one URL path segment, and Coveo's paging route, are refused at apply time.
#[test]
fn ids_that_would_address_another_route_are_refused_at_apply_time() {
    let ns = TestNamespace::new("hostile-ids");
    let with_id = |backend: &str, name: &str, id: &str| {
        provider(backend, name, "c").replace(
            "  connectionRef: c\n",
            &format!("  connectionRef: c\n  providerId: {id}\n"),
        )
    };
    for (backend, id, expect) in [
        ("coveo", "'..'", "must not be '.' or '..'"),
        ("coveo", "'.'", "must not be '.' or '..'"),
        ("keystone", "'a/b'", "contain '/'"),
        ("jitsudo", "\"tab\\there\"", "control characters"),
        ("coveo", "page", "reserved by Coveo"),
    ] {
        let err = ns
            .apply(&with_id(backend, "bad", id))
            .expect_err(&format!("{backend} providerId {id} was accepted"));
        assert!(err.contains(expect), "{backend} {id}: {err}");
    }
    // metadata.name is the default id: `page` needs an explicit providerId on Coveo only.
    let err = ns.apply(&provider("coveo", "page", "c")).unwrap_err();
    assert!(err.contains("reserved by Coveo"), "{err}");
    ns.apply(&provider("keystone", "page", "c")).unwrap();
    ns.apply(&with_id("coveo", "fine", "'a.b ok'")).unwrap();
    let err = ns
        .apply(&connection("coveo", "c", "http://127.0.0.1:1").replace("org1", "'..'"))
        .unwrap_err();
    assert!(err.contains("organizationId"), "{err}");
}

/// `provider(...)` labelled `secprov-e2e/run: {run}` (the selector of a test's own operator).
fn labelled_provider(backend: &str, name: &str, connection: &str, run: &str) -> String {
    provider(backend, name, connection).replace(
        &format!("  name: {name}\n"),
        &format!("  name: {name}\n  labels: {{secprov-e2e/run: {run}}}\n"),
    )
}

/// A hostile server in `mode` on 127.0.0.1, served by `rt`.
fn hostile_server(rt: &tokio::runtime::Runtime, mode: HostileMode) -> HostileServer {
    rt.block_on(HostileServer::start(addr("127.0.0.1"), mode))
        .unwrap()
}

/// Two tenants for the slot-sharing tests: a remote that hangs every request and a healthy
/// Coveo simulator, each with a namespace of its own (the runtime they serve on is kept).
struct Tenants {
    hang: HostileServer,
    healthy: secprov_sim::coveo::CoveoSimulator,
    hanging_ns: TestNamespace,
    healthy_ns: TestNamespace,
    _rt: tokio::runtime::Runtime,
}

impl Tenants {
    fn start(hanging_prefix: &str, healthy_prefix: &str) -> Self {
        let rt = runtime();
        let hang = hostile_server(&rt, HostileMode::Hang);
        let healthy = rt
            .block_on(secprov_sim::coveo::CoveoSimulator::start(
                addr("127.0.0.1"),
                secprov_sim::coveo::CoveoSimConfig::new("org1", COVEO_KEY),
            ))
            .unwrap();
        let healthy_ns = TestNamespace::new(healthy_prefix);
        healthy_ns
            .apply(&connection("coveo", "ok", &healthy.base_url()))
            .unwrap();
        Tenants {
            hang,
            healthy,
            hanging_ns: TestNamespace::new(hanging_prefix),
            healthy_ns,
            _rt: rt,
        }
    }

    /// The run label of this test's providers (the hanging namespace's name).
    fn run(&self) -> String {
        self.hanging_ns.name.clone()
    }

    /// One operator over all namespaces, 4 reconcile slots, watching only this test's providers.
    fn operator(&self) -> Operator {
        let run = self.run();
        let selector = format!("secprov-e2e/run={run}");
        Operator::start_all_namespaces(
            &run,
            &["--concurrency", "4", "--watch-label-selector", &selector],
        )
    }

    /// Applies `count` providers on the healthy connection and waits until each is Ready
    /// (within `timeout`, as kubectl spells it); returns how long that took after applying.
    fn healthy_providers_ready(&self, count: usize, timeout: &str, op: &Operator) -> Duration {
        let run = self.run();
        let ok: String = (0..count)
            .map(|i| labelled_provider("coveo", &format!("ok-{i}"), "ok", &run) + "---\n")
            .collect();
        self.healthy_ns.apply(&ok).unwrap();
        let applied = Instant::now();
        for i in 0..count {
            let resource = format!("securityprovider/ok-{i}");
            let ready = self.healthy_ns.wait_condition(&resource, "Ready", timeout);
            ready.unwrap_or_else(|e| panic!("ok-{i}: {e}\noperator log:\n{}", op.log_text()));
        }
        applied.elapsed()
    }
}

/// No head-of-line blocking between tenants: one remote hangs every request (its connection
/// has more providers than the operator has reconcile slots, and the default 30 s timeout),
/// a healthy remote serves another namespace. The healthy namespace's providers are Ready
/// within a minute, because the hanging connection holds at most its share of the slots.
#[test]
fn a_hanging_remote_does_not_hold_up_another_namespace() {
    let tenants = Tenants::start("hostile-hol-slow", "hostile-hol-ok");
    let (hang, slow_ns, run) = (&tenants.hang, &tenants.hanging_ns, tenants.run());
    slow_ns
        .apply(
            &connection("coveo", "slow", &hang.base_url())
                .replace("timeoutSeconds: 5", "timeoutSeconds: 30"),
        )
        .unwrap();
    let slow: String = (0..12)
        .map(|i| labelled_provider("coveo", &format!("slow-{i}"), "slow", &run) + "---\n")
        .collect();
    slow_ns.apply(&slow).unwrap();
    let started = Instant::now();
    let mut op = tenants.operator();
    // The hanging remote's providers are being reconciled (they hold slots) before the
    // healthy namespace's providers even exist.
    eventually(
        Duration::from_secs(30),
        "requests to the hanging remote",
        || (hang.received().len() >= 2).then_some(()),
    );
    let took = tenants.healthy_providers_ready(6, "60s", &op);
    eprintln!(
        "healthy providers Ready {took:?} after they were applied ({:?} after the operator started), while the hanging remote received {} requests",
        started.elapsed(),
        hang.received().len()
    );
    assert!(took < Duration::from_secs(60), "{took:?}");
    assert_eq!(tenants.healthy.provider_ids().len(), 6);
    // The hanging connection's providers are still not Ready: they really were stuck.
    let stuck = slow_ns.get_json("securityprovider/slow-0").unwrap();
    assert_ne!(
        condition(&stuck, "Ready").map(|c| c["status"].clone()),
        Some("True".into())
    );
    op.kill();
}

/// Requests a hostile server received for one provider (`GET /securityproviders/{id}`), not
/// the connection check's list page: each is one reconcile holding a slot until it times out.
fn provider_reads(server: &HostileServer) -> usize {
    server
        .received()
        .iter()
        .filter(|r| r.path_and_query.contains("/securityproviders/"))
        .filter(|r| !r.path_and_query.contains("/securityproviders/page"))
        .count()
}

/// Fair share per tenant: one namespace makes three connections to a remote that never answers
/// (4 providers each, 30 s request timeout) and `--concurrency 4`. Per connection that is 2
/// slots each, 6 in all: enough to hold every slot. The namespace's share (half of the
/// concurrency) bounds it at 2 however many connections it makes, so another namespace's
/// three new providers are Ready within 30 s, while the hanging ones are still waiting.
#[test]
fn one_namespace_with_many_hanging_connections_leaves_slots_for_another() {
    let tenants = Tenants::start("fair-greedy", "fair-other");
    let (hang, greedy_ns, run) = (&tenants.hang, &tenants.hanging_ns, tenants.run());
    for c in 0..3 {
        let name = format!("hang-{c}");
        let yaml = connection("coveo", &name, &hang.base_url())
            .replace("timeoutSeconds: 5", "timeoutSeconds: 30");
        greedy_ns.apply(&yaml).unwrap();
        let providers: String = (0..4)
            .map(|i| labelled_provider("coveo", &format!("{name}-{i}"), &name, &run) + "---\n")
            .collect();
        greedy_ns.apply(&providers).unwrap();
    }
    let started = Instant::now();
    let mut op = tenants.operator();
    // The operator is active: the greedy namespace's reconciles hold slots, hanging, before
    // the other namespace's providers exist. A second to take every slot it may.
    eventually(
        Duration::from_secs(30),
        "reads at the hanging remote",
        || (provider_reads(hang) >= 2).then_some(()),
    );
    std::thread::sleep(Duration::from_secs(1));
    let took = tenants.healthy_providers_ready(3, "30s", &op);
    // No request has timed out yet (30 s): each read received is a reconcile still holding
    // its slot.
    let held = provider_reads(hang);
    let before_timeouts = started.elapsed() < Duration::from_secs(30);
    eprintln!(
        "other namespace's 3 providers Ready {took:?} after they were applied ({:?} after the operator started); the greedy namespace held {held} slots",
        started.elapsed()
    );
    assert!(took < Duration::from_secs(30), "{took:?}");
    assert_eq!(tenants.healthy.provider_ids().len(), 3);
    if before_timeouts {
        assert_eq!(held, 2, "the greedy namespace holds exactly its share");
    }
    let stuck = greedy_ns.get_json("securityprovider/hang-0-0").unwrap();
    assert_ne!(
        condition(&stuck, "Ready").map(|c| c["status"].clone()),
        Some("True".into())
    );
    op.kill();
}

/// A hung remote call holds a slot only until `--reconcile-timeout`: with a 5 s deadline and a
/// 30 s request timeout, a remote that never answers gets more providers reported as
/// `RemoteTimeout` than its connection has slots (2 at `--concurrency 4`), well before any
/// request could have timed out by itself: each slot was given back at the deadline and used
/// again.
#[test]
fn a_hung_remote_call_gives_its_slot_back_at_the_reconcile_deadline() {
    let rt = runtime();
    let hang = hostile_server(&rt, HostileMode::Hang);
    let ns = TestNamespace::new("hostile-deadline");
    ns.apply(
        &connection("coveo", "hang", &hang.base_url())
            .replace("timeoutSeconds: 5", "timeoutSeconds: 30"),
    )
    .unwrap();
    let providers: String = (0..6)
        .map(|i| provider("coveo", &format!("hang-{i}"), "hang") + "---\n")
        .collect();
    ns.apply(&providers).unwrap();
    let started = Instant::now();
    let mut op = Operator::start(
        &ns.name,
        &["--concurrency", "4", "--reconcile-timeout", "5s"],
    );
    let timed_out = eventually(Duration::from_secs(25), "3 x RemoteTimeout", || {
        let reasons = provider_reasons(&ns);
        let count = reasons.iter().filter(|r| *r == "RemoteTimeout").count();
        (count >= 3).then_some(count)
    });
    let took = started.elapsed();
    eprintln!(
        "{timed_out} providers RemoteTimeout {took:?} after the operator started; {} reads at the hanging remote",
        provider_reads(&hang)
    );
    // The operator did call the remote: every reported timeout is a read it cut off.
    assert!(provider_reads(&hang) >= 3, "{}", provider_reads(&hang));
    assert!(took < Duration::from_secs(30), "{took:?}");
    let timed_out_synced = (0..6)
        .filter_map(|i| ns.get_json(&format!("securityprovider/hang-{i}")))
        .filter_map(|obj| condition(&obj, "Synced").cloned())
        .find(|synced| synced["reason"] == "RemoteTimeout")
        .expect("a Synced condition with reason RemoteTimeout");
    let message = timed_out_synced["message"].as_str().unwrap_or_default();
    assert!(message.contains("within 5s"), "{message}");
    op.kill();
}

/// The Ready reasons of every SecurityProvider in `ns`.
fn provider_reasons(ns: &TestNamespace) -> Vec<String> {
    let Ok(list) = ns.kubectl(&["get", "securityproviders", "-o", "json"]) else {
        return Vec::new();
    };
    let list: Value = serde_json::from_str(&list).unwrap_or_default();
    list["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|o| {
                    condition(o, "Ready")
                        .and_then(|c| c["reason"].as_str())
                        .unwrap_or_default()
                        .to_owned()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// No account lockout: fifty Keystone providers on a connection with a wrong password make
/// at most one or two login attempts per connection-check interval, not one each.
#[test]
fn a_wrong_keystone_password_is_tried_once_per_check_not_once_per_provider() {
    let rt = runtime();
    let sim = rt
        .block_on(secprov_sim::keystone::KeystoneSimulator::start(
            addr("127.0.0.1"),
            secprov_sim::keystone::KeystoneSimConfig::default(),
        ))
        .unwrap();
    let ns = TestNamespace::new("hostile-lockout");
    // KEYSTONE_PASSWORD is not the simulator's password.
    ns.apply(&connection("keystone", "ks", &sim.base_url()))
        .unwrap();
    let providers: String = (0..50)
        .map(|i| provider("keystone", &format!("p{i}"), "ks") + "---\n")
        .collect();
    ns.apply(&providers).unwrap();
    let interval = Duration::from_secs(10);
    let started = Instant::now();
    let mut op = Operator::start(&ns.name, &["--connection-check-interval", "10s"]);
    eventually(Duration::from_secs(120), "50 x RemoteUnauthorized", || {
        let reasons = provider_reasons(&ns);
        (reasons.len() == 50 && reasons.iter().all(|r| r == "RemoteUnauthorized")).then_some(())
    });
    let first = sim.operation_count("authenticate");
    let intervals = started.elapsed().as_secs_f64() / interval.as_secs_f64();
    eprintln!(
        "50 providers Unauthorized after {:?}: {first} login attempts",
        started.elapsed()
    );
    assert!(first >= 1, "the operator never tried");
    // At start the connection check and the first reconciles (which since issue 16 do their
    // work at once instead of first adding the finalizer in a reconcile of their own) may
    // each log in before the first refusal is remembered: up to two more than one per check
    // (3 seen in CI), never one per provider. The next two intervals are the steady state.
    assert!(
        first as f64 <= 2.0 * intervals.ceil() + 2.0,
        "{first} login attempts in {intervals:.1} check intervals"
    );
    // Two more intervals: the connection check tries again once each (the password may have
    // been fixed remotely); the providers answer from the remembered refusal.
    std::thread::sleep(2 * interval + Duration::from_secs(1));
    let more = sim.operation_count("authenticate") - first;
    eprintln!("{more} login attempts in the next two intervals");
    assert!(
        (1..=4).contains(&more),
        "{more} login attempts in two intervals"
    );
    op.kill();
}
