//! The HTTP client against the faulty Coveo simulator (issue 5, item 2): a timeout on every
//! request, retries with backoff only for idempotent calls, `Retry-After` in both forms, the
//! per-connection token bucket and concurrency cap; and TLS verification (item 6).
use std::sync::Arc;
use std::time::{Duration, Instant};

use secprov::backend::coveo::{CoveoClient, CoveoConfig};
use secprov::backend::http::{HttpClient, HttpOptions, Observation, RequestObserver, RetryPolicy};
use secprov::error::RemoteErrorKind;
use secprov_sim::coveo::{CoveoSimConfig, CoveoSimulator};
use secprov_sim::faults::{FaultConfig, KIND_THROTTLE_DATE, KIND_THROTTLE_SECONDS};

const ORG: &str = "client-org";
const KEY: &str = "client-test-key";

async fn simulator(faults: FaultConfig) -> CoveoSimulator {
    CoveoSimulator::start(
        "127.0.0.1:0".parse().unwrap(),
        CoveoSimConfig {
            faults,
            ..CoveoSimConfig::new(ORG, KEY)
        },
    )
    .await
    .unwrap()
}

/// The simulator's default faults (none) with `adjust` applied.
fn faults(adjust: impl FnOnce(&mut FaultConfig)) -> FaultConfig {
    let mut faults = FaultConfig::default();
    adjust(&mut faults);
    faults
}

fn options() -> HttpOptions {
    HttpOptions {
        timeout: Duration::from_secs(5),
        requests_per_second: 1000,
        burst: 1000,
        max_concurrency: 16,
        retry: RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            max_retry_after: Duration::from_secs(10),
        },
        ..HttpOptions::default()
    }
}

fn client(sim: &CoveoSimulator, options: &HttpOptions) -> CoveoClient {
    CoveoClient::new(&sim.base_url(), ORG, KEY.into(), options).unwrap()
}

fn request(id: &str) -> secprov::backend::coveo::ProviderRequest {
    CoveoConfig::desired(id, id, &Default::default()).to_request()
}

#[tokio::test]
async fn creates_are_never_retried_reads_and_updates_are() {
    let sim = simulator(faults(|f| f.error_rate = 1.0)).await;
    let client = client(&sim, &options());
    let err = client.create(&request("p")).await.unwrap_err();
    assert_eq!(err.kind, RemoteErrorKind::Unavailable);
    assert_eq!(sim.request_count_for("POST", "create"), 1, "POST sent once");

    let err = client.get("p").await.unwrap_err();
    assert_eq!(err.kind, RemoteErrorKind::Unavailable);
    assert_eq!(
        sim.request_count_for("GET", "get"),
        4,
        "GET retried up to max_attempts"
    );

    let err = client.update(&request("p")).await.unwrap_err();
    assert_eq!(err.kind, RemoteErrorKind::Unavailable);
    assert_eq!(
        sim.request_count_for("PUT", "update"),
        4,
        "PUT (idempotent) retried"
    );

    // A dropped connection is retried for reads, not for creates.
    sim.faults().set(faults(|f| f.reset_rate = 1.0)).unwrap();
    sim.reset_counters();
    assert!(client.create(&request("q")).await.is_err());
    assert!(client.get("q").await.is_err());
    assert_eq!(sim.request_count_for("POST", "create"), 1);
    assert_eq!(sim.request_count_for("GET", "get"), 4);
}

#[tokio::test]
async fn a_lost_create_response_leaves_a_provider_that_a_read_finds() {
    let sim = simulator(faults(|f| f.lost_response_rate = 1.0)).await;
    let client = client(&sim, &options());
    assert!(client.create(&request("lost")).await.is_err());
    assert_eq!(sim.committed_creates(), 1);
    sim.faults().clear();
    assert!(client.get("lost").await.unwrap().is_some());
    // A second create of the same id is refused: the remote is keyed by id.
    let err = client.create(&request("lost")).await.unwrap_err();
    assert_eq!(err.kind, RemoteErrorKind::Conflict);
    assert_eq!(sim.create_conflicts(), 1);
}

#[tokio::test]
async fn retry_after_is_honoured_in_both_forms() {
    let sim = simulator(faults(|f| {
        f.throttle_rate = 1.0;
        f.retry_after_seconds = 1;
    }))
    .await;
    let mut options = options();
    options.retry.max_attempts = 3;
    let client = client(&sim, &options);
    let started = Instant::now();
    let err = client.get("p").await.unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(err.kind, RemoteErrorKind::RateLimited);
    assert!(
        err.retry_after.is_some(),
        "the last Retry-After is passed on"
    );
    let injected = sim.faults().injected();
    assert_eq!(injected.get(KIND_THROTTLE_SECONDS), Some(&2));
    assert_eq!(injected.get(KIND_THROTTLE_DATE), Some(&1));
    // "1" then an HTTP-date 2 s ahead (at least 1 s once truncated to whole seconds).
    assert!(elapsed >= Duration::from_millis(1900), "waited {elapsed:?}");
    assert!(elapsed < Duration::from_secs(6), "waited {elapsed:?}");
}

#[tokio::test]
async fn a_too_long_retry_after_goes_back_to_the_controller() {
    let sim = simulator(faults(|f| {
        f.throttle_rate = 1.0;
        f.retry_after_seconds = 120;
    }))
    .await;
    let client = client(&sim, &options());
    let started = Instant::now();
    let err = client.get("p").await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(err.retry_after, Some(Duration::from_secs(120)));
    assert_eq!(sim.request_count_for("GET", "get"), 1);
}

#[tokio::test]
async fn hung_requests_time_out() {
    let sim = simulator(faults(|f| {
        f.hang_rate = 1.0;
        f.hang_for = Duration::from_secs(30);
    }))
    .await;
    let mut options = options();
    options.timeout = Duration::from_millis(300);
    options.retry.max_attempts = 2;
    let client = client(&sim, &options);
    let started = Instant::now();
    let err = client.get("p").await.unwrap_err();
    assert_eq!(err.kind, RemoteErrorKind::Timeout);
    assert!(started.elapsed() < Duration::from_secs(3));
    let started = Instant::now();
    let err = client.create(&request("p")).await.unwrap_err();
    assert_eq!(err.kind, RemoteErrorKind::Timeout);
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn malformed_json_is_a_bad_response_not_a_panic() {
    let sim = simulator(FaultConfig::default()).await;
    let client = client(&sim, &options());
    client.create(&request("m")).await.unwrap();
    sim.faults()
        .set(faults(|f| f.malformed_rate = 1.0))
        .unwrap();
    let err = client.get("m").await.unwrap_err();
    assert_eq!(err.kind, RemoteErrorKind::BadResponse);
    assert!(client.list().await.is_err());
}

#[tokio::test]
async fn concurrency_never_exceeds_the_cap() {
    let sim = simulator(faults(|f| f.latency = Duration::from_millis(100))).await;
    let mut options = options();
    options.max_concurrency = 3;
    let client = Arc::new(client(&sim, &options));
    let calls = (0..24).map(|i| {
        let client = client.clone();
        tokio::spawn(async move { client.get(&format!("p{i}")).await })
    });
    for call in futures::future::join_all(calls).await {
        assert!(call.unwrap().unwrap().is_none());
    }
    assert_eq!(sim.faults().max_in_flight(), 3);
}

#[tokio::test]
async fn the_token_bucket_paces_requests() {
    let sim = simulator(FaultConfig::default()).await;
    let mut options = options();
    options.requests_per_second = 20;
    options.burst = 5;
    // Every request held back by the bucket is reported (secprov_rate_limit_waits_total).
    let waits = Arc::new(std::sync::Mutex::new(Vec::new()));
    let observed = waits.clone();
    let observer: RequestObserver = Arc::new(move |backend, observation| {
        if let Observation::RateLimitWait(waited) = observation {
            observed.lock().unwrap().push((backend, waited));
        }
    });
    let client = Arc::new(client(&sim, &options).with_observer(observer));
    let started = Instant::now();
    let calls = (0..25).map(|i| {
        let client = client.clone();
        tokio::spawn(async move { client.get(&format!("p{i}")).await })
    });
    for call in futures::future::join_all(calls).await {
        call.unwrap().unwrap();
    }
    // 5 at once, then 20 more at 20/s: about one second.
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(900), "took {elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    // The 20 beyond the burst waited (a few may find a token refilled meanwhile), the first 5
    // did not.
    let waits = waits.lock().unwrap();
    assert!((15..=20).contains(&waits.len()), "{} waits", waits.len());
    assert!(waits.iter().all(|(backend, _)| *backend == "coveo"));
    let total: Duration = waits.iter().map(|(_, w)| *w).sum();
    assert!(total >= Duration::from_secs(2), "waited {total:?} in all");
}

#[tokio::test]
async fn faults_are_configurable_over_http_at_run_time() {
    let sim = simulator(FaultConfig::default()).await;
    let http = {
        secprov::backend::http::install_tls_provider();
        reqwest::Client::new()
    };
    let url = format!("{}/_sim/faults", sim.base_url());
    let reply = http
        .post(&url)
        .json(&serde_json::json!({"errorRate": 1.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    assert_eq!(sim.faults().config().error_rate, 1.0);
    let client = client(&sim, &options());
    assert!(client.get("p").await.is_err());
    let report: serde_json::Value = http.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(report["injected"]["error"], 4);
    let reply = http
        .post(&url)
        .json(&serde_json::json!({"errorRate": 2.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 400);
    http.post(&url)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert!(client.get("p").await.unwrap().is_none());
}

// ---------------------------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------------------------

/// A CA and a server certificate for 127.0.0.1 signed by it, made with the openssl CLI.
fn certificates(dir: &std::path::Path) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
    ]);
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    let read = |name: &str| std::fs::read(dir.join(name)).unwrap();
    (read("ca.crt"), read("server.crt"), read("server.key"))
}

/// A minimal HTTPS server answering `{}` to every request; returns its port.
async fn tls_server(cert_pem: &[u8], key_pem: &[u8]) -> u16 {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls;

    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key_pem).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A client that refuses our certificate aborts the handshake: nothing to do.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = tls
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    port
}

#[tokio::test]
async fn tls_is_verified_and_a_ca_bundle_adds_trust() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(dir.path());
    let port = tls_server(&cert, &key).await;
    let url = format!("https://127.0.0.1:{port}/");
    let mut options = options();
    options.retry.max_attempts = 1;

    let untrusted = HttpClient::new("coveo", &options).unwrap();
    let err = untrusted
        .send("get", true, |c| c.get(&url))
        .await
        .unwrap_err();
    assert_eq!(err.kind, RemoteErrorKind::Unavailable);
    let message = err.to_string().to_lowercase();
    println!("untrusted certificate: {err}");
    assert!(
        message.contains("certificate") || message.contains("issuer"),
        "{message}"
    );

    options.ca_bundle_pem = Some(ca);
    let trusted = HttpClient::new("coveo", &options).unwrap();
    let reply = trusted.send("get", true, |c| c.get(&url)).await.unwrap();
    assert_eq!(reply.status, 200);

    options.ca_bundle_pem = Some(b"not a certificate".to_vec());
    assert!(HttpClient::new("coveo", &options).is_err());
}

#[tokio::test]
async fn neither_the_client_nor_its_errors_print_the_key() {
    let sim = simulator(FaultConfig::default()).await;
    let right = client(&sim, &options());
    assert!(!format!("{right:?}").contains(KEY));
    let wrong_key = "client-test-wrong-key-31337";
    let wrong = CoveoClient::new(&sim.base_url(), ORG, wrong_key.into(), &options()).unwrap();
    let err = wrong.get("p").await.unwrap_err();
    assert_eq!(err.kind, RemoteErrorKind::Unauthorized);
    for text in [err.to_string(), format!("{err:?}"), format!("{wrong:?}")] {
        assert!(!text.contains(wrong_key), "{text}");
    }
    // Transport failures name the host, never the request (whose headers hold the key).
    sim.faults().set(faults(|f| f.reset_rate = 1.0)).unwrap();
    let err = right.get("p").await.unwrap_err();
    assert!(!format!("{err} {err:?}").contains(KEY));
}
