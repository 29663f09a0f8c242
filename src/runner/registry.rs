//! The registry: every case of every suite, as plain data. A suite returns its cases from
//! the plan (config and what the target offers); nothing here runs anything.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::context::Ctx;
use super::locks::Claims;
use crate::config::RouterConfig;
use crate::stack::manifest::Manifest;
use crate::stack::role::Role;

pub type CaseFuture = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;
pub type CaseFn = Arc<dyn Fn(Ctx) -> CaseFuture + Send + Sync>;

/// One test case: `suite::case[::param]`.
#[derive(Clone)]
pub struct Case {
    pub name: String,
    /// Services it needs besides the router, by role.
    pub needs: Vec<Role>,
    /// Registered as ignored, with the reason (shown in the summary and reports).
    pub ignored: Option<String>,
    /// The model groups it sends traffic to or breaks (see `runner::locks`).
    pub claims: Claims,
    /// About how long it runs, in seconds, from the waits the config gives it (see
    /// `runner::schedule`): orders the first run; later runs go by the last one's times.
    pub cost_s: Option<f64>,
    /// Services it hurts (kills, pauses, restarts): the chaos suite's. Only a stack this run
    /// started can be hurt; every case depending on such a service waits while it is hurt.
    pub hurts: Vec<String>,
    pub run: CaseFn,
}

impl Case {
    pub fn new<F, Fut>(name: impl Into<String>, f: F) -> Self
    where
        F: Fn(Ctx) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        Self {
            name: name.into(),
            needs: Vec::new(),
            ignored: None,
            claims: Claims::default(),
            cost_s: None,
            hurts: Vec::new(),
            run: Arc::new(move |c| Box::pin(f(c))),
        }
    }
    pub fn needs(mut self, roles: &[Role]) -> Self {
        self.needs.extend_from_slice(roles);
        self
    }
    pub fn ignore(mut self, reason: impl Into<String>) -> Self {
        self.ignored = Some(reason.into());
        self
    }
    /// Declares about how long the case runs (its config-given waits, in seconds), so the
    /// runner can start it early (`runner::schedule`).
    pub fn cost(mut self, seconds: f64) -> Self {
        self.cost_s = Some(seconds);
        self
    }
    /// Ignores the case with `reason` when there is one.
    pub fn ignore_if(self, reason: Option<String>) -> Self {
        match reason {
            Some(r) if self.ignored.is_none() => self.ignore(r),
            _ => self,
        }
    }
    /// Sends ordinary traffic to these groups.
    pub fn uses<S: AsRef<str>>(mut self, groups: &[S]) -> Self {
        self.claims.uses.extend(groups.iter().map(|g| g.as_ref().to_owned()));
        self
    }
    /// Makes these groups fail (exclusive where LiteLLM can cool them down).
    pub fn breaks<S: AsRef<str>>(mut self, groups: &[S]) -> Self {
        self.claims.breaks.extend(groups.iter().map(|g| g.as_ref().to_owned()));
        self
    }
    /// Needs these groups to itself.
    pub fn owns<S: AsRef<str>>(mut self, groups: &[S]) -> Self {
        self.claims.owns.extend(groups.iter().map(|g| g.as_ref().to_owned()));
        self
    }
    /// Hurts these services (see `hurts`).
    pub fn hurts<S: AsRef<str>>(mut self, services: &[S]) -> Self {
        self.hurts.extend(services.iter().map(|s| s.as_ref().to_owned()));
        self
    }
    pub fn suite(&self) -> &str {
        self.name.split("::").next().unwrap_or(&self.name)
    }
}

/// What the suites derive their cases from.
pub struct Plan {
    pub manifest: Manifest,
    pub config: RouterConfig,
    /// Roles the target offers (all of the manifest's for the embedded stack; those in the
    /// state file when attached; the router alone for a bare `ROUTER_URL`).
    pub available: Vec<Role>,
    /// `GAUNTLET_REQUIRE=all`: a case that would be ignored for a missing service fails instead.
    pub require_all: bool,
    /// The stack is started by this run from the manifest (not attached, not a bare router).
    pub embedded: bool,
}

impl Plan {
    /// The tenants the ledger suite bills: the teams the router config names, else the
    /// manifest's synthetic ones.
    pub fn tenants(&self) -> Vec<String> {
        if self.config.teams.is_empty() {
            self.manifest.ledger.tenants.clone()
        } else {
            self.config.teams.clone()
        }
    }

    pub fn offers(&self, role: Role) -> bool {
        self.available.contains(&role)
    }

    /// `GAUNTLET_REQUIRE` names `gpu`: the GPU lane's cases fail where they cannot run.
    /// Read from the environment rather than carried in the plan, whose fields every caller
    /// (tests included) spells out; `run` refused a malformed value (exit 2) before this.
    pub fn requires_gpu(&self) -> bool {
        Require::from_env().is_ok_and(|r| r.gpu)
    }
}

/// `GAUNTLET_REQUIRE`: a comma list of what must not be skipped. `all`: a case ignored for a
/// service the target lacks fails instead. `gpu`: the GPU lane's cases fail where no GPU
/// runs them. `all` does not imply `gpu`: CI sets `all` and has no GPU.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Require {
    pub all: bool,
    pub gpu: bool,
}

impl Require {
    pub const WORDS: [&str; 2] = ["all", "gpu"];

    /// `"all"`, `"gpu"`, `"all,gpu"` (spaces and empty items allowed); an unknown word is an
    /// error naming it, so a typo cannot quietly skip what CI meant to require.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut r = Self::default();
        for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match word {
                "all" => r.all = true,
                "gpu" => r.gpu = true,
                other => {
                    return Err(format!(
                        "unknown word '{other}' (known: {}; a comma list like all,gpu)",
                        Self::WORDS.join(", ")
                    ));
                }
            }
        }
        Ok(r)
    }

    pub fn from_env() -> Result<Self, crate::error::RunError> {
        match std::env::var("GAUNTLET_REQUIRE") {
            Ok(v) => Self::parse(&v).map_err(|e| crate::error::RunError::usage(format!("GAUNTLET_REQUIRE={v:?}: {e}"))),
            Err(_) => Ok(Self::default()),
        }
    }
}

/// The lock name standing for a service (see `service_claims`): `@` cannot start a model
/// group's lock that matters here, and sorts every service before the groups.
pub fn service_lock(service: &str) -> String {
    format!("@service:{service}")
}

/// Adds a case's service claims: every case holds, shared, the services its traffic passes
/// through (the router, Redis behind it, the services of the roles it needs); a case that hurts
/// a service holds it exclusively — so killing Redis waits for every running case and holds
/// every other back, while restarting the second router only waits for the cases using it.
fn service_claims(plan: &Plan, mut c: Case) -> Case {
    let m = &plan.manifest;
    let mut used: Vec<&str> = vec![m.stack.router.as_str()];
    used.extend(m.service_with(Role::Redis));
    used.extend(c.needs.iter().filter_map(|r| m.service_with(*r)));
    for s in used {
        if !c.hurts.iter().any(|h| h == s) {
            c.claims.uses.push(service_lock(s));
        }
    }
    let hurt: Vec<String> = c.hurts.iter().map(|s| service_lock(s)).collect();
    c.claims.owns.extend(hurt);
    c
}

/// Applies the availability rule: a case whose services the target lacks is ignored with
/// the reason — or, under `GAUNTLET_REQUIRE=all`, kept so it fails with that reason. A case
/// that hurts services needs a stack this run started.
pub fn gate(plan: &Plan, cases: Vec<Case>) -> Vec<Case> {
    cases
        .into_iter()
        .map(|c| service_claims(plan, c))
        .map(|c| {
            if c.hurts.is_empty() || plan.embedded || c.ignored.is_some() {
                return c;
            }
            let reason = format!(
                "hurts {} (chaos): only a stack this run starts can be hurt — run it without \
                 GAUNTLET_STACK or ROUTER_URL",
                c.hurts.join(", ")
            );
            refuse(plan, c, reason)
        })
        .map(|c| {
            let missing: Vec<String> = c
                .needs
                .iter()
                .filter(|r| !plan.offers(**r))
                .map(ToString::to_string)
                .collect();
            if missing.is_empty() || c.ignored.is_some() {
                return c;
            }
            let reason = if plan.embedded {
                format!(
                    "needs the {} role, which no service of {} plays (add one, or give one `role = \"…\"`)",
                    missing.join(", "),
                    plan.manifest.origin
                )
            } else {
                format!(
                    "needs {} which this target lacks: run on the embedded stack (no ROUTER_URL) or attach one with GAUNTLET_STACK",
                    missing.join(", ")
                )
            };
            refuse(plan, c, reason)
        })
        .collect()
}

/// Ignores `c` with `reason`, or under `GAUNTLET_REQUIRE=all` keeps it so it fails with it.
fn refuse(plan: &Plan, c: Case, reason: String) -> Case {
    if plan.require_all {
        let r = reason.clone();
        Case {
            run: Arc::new(move |_| {
                let r = r.clone();
                Box::pin(async move { anyhow::bail!("GAUNTLET_REQUIRE=all: {r}") })
            }),
            ..c
        }
    } else {
        c.ignore(reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(embedded: bool, require_all: bool) -> Plan {
        let manifest = Manifest::builtin().unwrap();
        let config = RouterConfig::from_document(&manifest.router_config.doc).unwrap();
        Plan {
            available: Role::ALL.to_vec(),
            manifest,
            config,
            require_all,
            embedded,
        }
    }

    fn noop(name: &str) -> Case {
        Case::new(name, |_| async { Ok(()) })
    }

    #[test]
    fn hurting_a_service_holds_it_exclusively_and_every_case_holds_what_it_passes_through() {
        let cases = gate(
            &plan(true, false),
            vec![
                noop("plain"),
                noop("kills::redis").hurts(&["redis"]),
                noop("second").needs(&[Role::SecondRouter]),
            ],
        );
        let lock = |s: &str| service_lock(s);
        assert_eq!(cases[0].claims.uses, [lock("router"), lock("redis")]);
        assert!(cases[0].claims.owns.is_empty());
        assert_eq!(cases[1].claims.owns, [lock("redis")]);
        assert_eq!(cases[1].claims.uses, [lock("router")]);
        assert!(cases[1].ignored.is_none());
        assert_eq!(cases[2].claims.uses, [lock("router"), lock("redis"), lock("router_b")]);
    }

    #[test]
    fn only_a_stack_this_run_started_can_be_hurt() {
        let attached = gate(&plan(false, false), vec![noop("kills::redis").hurts(&["redis"])]);
        let why = attached[0].ignored.as_deref().expect("ignored when attached");
        assert!(why.contains("hurts redis") && why.contains("GAUNTLET_STACK"), "{why}");
        // Under GAUNTLET_REQUIRE=all it is kept, to fail with that reason.
        let required = gate(&plan(false, true), vec![noop("kills::redis").hurts(&["redis"])]);
        assert!(required[0].ignored.is_none());
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let ctx = Ctx::new(
            "kills::redis",
            Default::default(),
            Arc::new(plan(false, true).config),
            Default::default(),
            "http://127.0.0.1:9",
            Default::default(),
        );
        let err = rt.block_on((required[0].run)(ctx)).unwrap_err().to_string();
        assert!(
            err.contains("GAUNTLET_REQUIRE=all") && err.contains("hurts redis"),
            "{err}"
        );
    }

    #[test]
    fn require_is_a_comma_list_and_all_does_not_imply_gpu() {
        let r = |s: &str| Require::parse(s).unwrap();
        assert_eq!(r(""), Require::default());
        assert_eq!(r("all"), Require { all: true, gpu: false });
        assert_eq!(r("gpu"), Require { all: false, gpu: true });
        assert_eq!(r("all,gpu"), Require { all: true, gpu: true });
        assert_eq!(r(" gpu , all ,"), Require { all: true, gpu: true });
        for bad in ["yes", "all,gpus", "ALL", "all;gpu"] {
            let e = Require::parse(bad).unwrap_err();
            assert!(
                e.contains("unknown word") && e.contains("known: all, gpu"),
                "{bad}: {e}"
            );
        }
    }
}
