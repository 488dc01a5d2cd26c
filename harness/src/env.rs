//! The one environment builder of the end-to-end tests and the demo: a namespace of its own, a fresh
//! simulator, the example connection pointing at it with the simulator's credentials, and the
//! runtime the simulator runs on. Operators are started from it with the tests' usual timing.
use std::time::Duration;

use secprov_sim::coveo::{CoveoSimConfig, CoveoSimulator};
use secprov_sim::jitsudo::{JitsudoSimConfig, JitsudoSimulator};
use secprov_sim::keystone::{KeystoneSimConfig, KeystoneSimulator};

use serde_json::Value;

use crate::examples::{
    COVEO_ORG, DEMO_COVEO_API_KEY, DEMO_JITSUDO_API_KEY, DEMO_KEYSTONE_PASSWORD, example,
};
use crate::http::{http_request, port_of};
use crate::namespace::TestNamespace;
use crate::operator::Operator;

/// A namespace, a simulator `S` and the example connection to it.
pub struct Env<S> {
    pub ns: TestNamespace,
    pub sim: S,
    pub rt: tokio::runtime::Runtime,
}

/// The runtime simulators run on (two workers: they serve while the test thread blocks).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A Coveo simulator for the example organization accepting `api_key`, its CREATING and
/// REFRESHING lasting `refresh`.
pub fn coveo_config(api_key: &str, refresh: Duration) -> CoveoSimConfig {
    CoveoSimConfig {
        refresh_duration: refresh,
        ..CoveoSimConfig::new(COVEO_ORG, api_key)
    }
}

/// A Keystone simulator whose admin user has `password` (the simulator's other defaults).
pub fn keystone_config(password: &str) -> KeystoneSimConfig {
    KeystoneSimConfig {
        password: password.into(),
        ..Default::default()
    }
}

impl Env<CoveoSimulator> {
    /// The example Coveo connection (`coveo`, organization and API key of `config`) in a new
    /// namespace named after `prefix`.
    pub fn coveo(prefix: &str, config: CoveoSimConfig) -> Self {
        let rt = runtime();
        let (org, key) = (config.organization_id.clone(), config.api_key.clone());
        let sim = rt
            .block_on(CoveoSimulator::start(
                "127.0.0.1:0".parse().unwrap(),
                config,
            ))
            .expect("start the Coveo simulator");
        let ns = TestNamespace::new(prefix);
        let connection = example("coveo/00-connection.yaml", &sim.base_url())
            .replace(DEMO_COVEO_API_KEY, &key)
            .replace(
                &format!("organizationId: {COVEO_ORG}"),
                &format!("organizationId: {org}"),
            );
        ns.apply(&connection).expect("apply the Coveo connection");
        Env { ns, sim, rt }
    }
}

impl Env<CoveoSimulator> {
    /// Creates a provider directly in the remote organization, as a console user would.
    pub fn create_remotely(&self, body: Value) {
        let config = self.sim.config();
        let path = &format!(
            "/rest/organizations/{}/securityproviders",
            config.organization_id
        );
        let port = port_of(&self.sim.base_url()).expect("the simulator's port");
        let auth = format!("Bearer {}", config.api_key);
        let (status, text) = http_request(
            port,
            "POST",
            path,
            &[("Authorization", auth.as_str())],
            Some(&body.to_string()),
        )
        .expect("POST to the Coveo simulator");
        assert!(
            status < 300,
            "the simulator refuses the provider: {status} {text}"
        );
    }
}

impl Env<KeystoneSimulator> {
    /// The example Keystone connection (`keystone`) with `password` in its Secret (the
    /// simulator accepts `config.password`), in a new namespace named after `prefix`.
    pub fn keystone(prefix: &str, config: KeystoneSimConfig, password: &str) -> Self {
        let rt = runtime();
        let sim = rt
            .block_on(KeystoneSimulator::start(
                "127.0.0.1:0".parse().unwrap(),
                config,
            ))
            .expect("start the Keystone simulator");
        let ns = TestNamespace::new(prefix);
        let connection = example("keystone/00-connection.yaml", &sim.base_url())
            .replace(DEMO_KEYSTONE_PASSWORD, password);
        ns.apply(&connection)
            .expect("apply the Keystone connection");
        Env { ns, sim, rt }
    }
}

impl Env<JitsudoSimulator> {
    /// The example JITSudo connection (`jitsudo`, the simulator's default tenant) with
    /// `secret_key` in its Secret (the simulator accepts `config.api_key`), in a new namespace
    /// named after `prefix`.
    pub fn jitsudo(prefix: &str, config: JitsudoSimConfig, secret_key: &str) -> Self {
        let rt = runtime();
        let sim = rt
            .block_on(JitsudoSimulator::start(
                "127.0.0.1:0".parse().unwrap(),
                config,
            ))
            .expect("start the JITSudo simulator");
        let ns = TestNamespace::new(prefix);
        let connection = example("jitsudo/00-connection.yaml", &sim.base_url())
            .replace(DEMO_JITSUDO_API_KEY, secret_key);
        assert!(
            connection.contains(&sim.config().tenant_id),
            "the example's tenant is the simulator's default tenant"
        );
        ns.apply(&connection).expect("apply the JITSudo connection");
        Env { ns, sim, rt }
    }
}

impl<S> Env<S> {
    /// An operator for this namespace with the tests' usual timing (progress every 500 ms,
    /// resync every 2 s); `extra` adds flags or overrides those two.
    pub fn start_operator(&self, extra: &[&str]) -> Operator {
        Operator::start(&self.ns.name, &operator_args(extra))
    }
}

/// The tests' usual operator flags followed by `extra`, without the defaults `extra` sets.
pub fn operator_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = Vec::new();
    for (flag, value) in [
        ("--progress-interval", "500ms"),
        ("--resync-interval", "2s"),
    ] {
        if !extra.contains(&flag) {
            args.extend_from_slice(&[flag, value]);
        }
    }
    args.extend_from_slice(extra);
    args
}

/// An environment with its operator running.
pub struct Running<S> {
    pub operator: Operator,
    pub env: Env<S>,
}

impl<S> Env<S> {
    /// Starts the operator (see [`Env::start_operator`]) and keeps it with the environment.
    pub fn with_operator(self, extra: &[&str]) -> Running<S> {
        Running {
            operator: self.start_operator(extra),
            env: self,
        }
    }
}

impl<S> std::ops::Deref for Running<S> {
    type Target = Env<S>;
    fn deref(&self) -> &Env<S> {
        &self.env
    }
}

impl<S> Running<S> {
    /// Waits (up to 60 s) until SecurityProvider `name` is Ready and returns it; panics with the
    /// operator's log when it is not.
    pub fn wait_ready(&self, name: &str) -> Value {
        let resource = format!("securityprovider/{name}");
        self.env.ns.wait_ready(&resource, "60s", &self.operator)
    }

    /// Waits (up to 60 s, as [`Self::wait_ready`]) until SecurityProvider `name`'s condition
    /// `type_` has `reason` and returns it; panics with the conditions last seen and the
    /// operator's log when not.
    pub fn wait_reason(&self, name: &str, type_: &str, reason: &str) -> Value {
        let resource = format!("securityprovider/{name}");
        let timeout = Duration::from_secs(60);
        self.env
            .ns
            .wait_reason_logged(&resource, type_, reason, timeout, &self.operator)
    }
}
