//! Fallback chains as written, and the walk LiteLLM actually makes through them.
//!
//! A config names one level (`fallbacks: [{a: [b, c]}]`), but the pinned LiteLLM (1.100.5,
//! `router_utils/fallback_event_handlers.run_async_fallback`) calls each fallback group *with
//! its own fallbacks*: when `b` fails too, `b`'s list is tried before `c`, depth first, every
//! hop counting against `max_fallbacks` (default 5), a group already attempted for this
//! request skipped. Before any of that, a group whose deployments use two or more `order`
//! levels walks its own higher levels. Which list applies depends on the error each group
//! raised: a context-window error uses `context_window_fallbacks` when that setting exists
//! (and gives up if the group has no entry there), otherwise the general list; the same for
//! content-policy errors. `default_fallbacks` are a `*` entry of the general list; a group's
//! own entry beats `*`.
//!
//! [`Fallbacks::walk`] replays that, so the `exhausted` case breaks every group LiteLLM will
//! try — not only the first level — and checks the order it tries them in.

use std::collections::BTreeSet;

/// Which fallback list an error sends the router to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChainKind {
    General,
    ContextWindow,
    ContentPolicy,
}

impl ChainKind {
    pub const ALL: [ChainKind; 3] = [Self::General, Self::ContextWindow, Self::ContentPolicy];

    /// The setting's name in the config.
    pub fn key(self) -> &'static str {
        match self {
            Self::General => "fallbacks",
            Self::ContextWindow => "context_window_fallbacks",
            Self::ContentPolicy => "content_policy_fallbacks",
        }
    }
}

/// A fallback chain as the config writes it: the group asked for, then its fallbacks.
#[derive(Debug, Clone, PartialEq)]
pub struct Chain {
    pub kind: ChainKind,
    pub groups: Vec<String>,
}

impl Chain {
    /// `chat-primary/chat-backup/chat-regional`: a stable, filterable, shell-safe case name part.
    pub fn name(&self) -> String {
        self.groups.join("/")
    }
    pub fn primary(&self) -> &str {
        &self.groups[0]
    }
    /// The group LiteLLM tries first when the primary fails.
    pub fn backup(&self) -> &str {
        &self.groups[1]
    }
}

/// One list: `(group or "*", [fallback groups])` in config order.
pub type List = Vec<(String, Vec<String>)>;

/// Every fallback setting of the config.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fallbacks {
    pub general: List,
    /// `None` when the setting is absent: then context-window errors use the general list.
    pub context_window: Option<List>,
    pub content_policy: Option<List>,
    pub max_fallbacks: u32,
}

/// One step of a walk: a group tried (and, for a hop between `order` levels of one group,
/// the level).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub group: String,
    pub order: Option<i64>,
}

/// What the walk found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Walk {
    pub steps: Vec<Step>,
    /// The group that answered, if one did.
    pub served_by: Option<String>,
}

impl Walk {
    /// The groups tried, consecutive repeats (order levels, retries) merged.
    pub fn groups(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for s in &self.steps {
            if out.last() != Some(&s.group) {
                out.push(s.group.clone());
            }
        }
        out
    }
}

/// What a group does when the router calls it during a walk.
pub trait Outcomes {
    /// `None`: it answers. `Some(kind)`: it fails with an error of that kind.
    fn outcome(&self, group: &str) -> Option<ChainKind>;
    /// The distinct `order` levels of the group's deployments.
    fn order_levels(&self, group: &str) -> Vec<i64>;
}

impl Fallbacks {
    /// The list for `group` in `list`: its own entry, else a `*` entry.
    fn lookup<'a>(list: &'a List, group: &str) -> Option<&'a [String]> {
        list.iter()
            .find(|(k, _)| k == group)
            .or_else(|| list.iter().find(|(k, _)| k == "*"))
            .map(|(_, v)| v.as_slice())
    }

    /// The fallback groups LiteLLM turns to when `group` raised an error of `kind`.
    pub fn targets(&self, kind: ChainKind, group: &str) -> Option<&[String]> {
        let special = match kind {
            ChainKind::ContextWindow => self.context_window.as_ref(),
            ChainKind::ContentPolicy => self.content_policy.as_ref(),
            ChainKind::General => None,
        };
        match special {
            Some(list) if !list.is_empty() => Self::lookup(list, group),
            _ => Self::lookup(&self.general, group),
        }
    }

    /// Replays LiteLLM's walk from `start`, with each group behaving as `world` says.
    pub fn walk(&self, start: &str, world: &dyn Outcomes) -> Walk {
        let mut w = Walker {
            fb: self,
            world,
            attempted: BTreeSet::new(),
            steps: Vec::new(),
        };
        let served = w.call(start, None, 0);
        Walk {
            steps: w.steps,
            served_by: served,
        }
    }
}

struct Walker<'a> {
    fb: &'a Fallbacks,
    world: &'a dyn Outcomes,
    attempted: BTreeSet<(String, Option<i64>)>,
    steps: Vec<Step>,
}

impl Walker<'_> {
    /// `async_function_with_fallbacks` for `group` (at `order` level, if a hop chose one):
    /// returns the group that answered, if any.
    fn call(&mut self, group: &str, order: Option<i64>, depth: u32) -> Option<String> {
        self.steps.push(Step {
            group: group.to_owned(),
            order,
        });
        let Some(kind) = self.world.outcome(group) else {
            return Some(group.to_owned());
        };
        // Order levels of the same group come first (not for context-window/content-policy
        // errors, which have their own lists).
        let mut targets: Vec<(String, Option<i64>)> = Vec::new();
        if kind == ChainKind::General {
            let levels = self.world.order_levels(group);
            if levels.len() > 1 {
                let done = order.unwrap_or(levels[0]);
                targets.extend(
                    levels
                        .iter()
                        .filter(|l| **l > done)
                        .map(|l| (group.to_owned(), Some(*l))),
                );
            }
        }
        match self.fb.targets(kind, group) {
            Some(list) => targets.extend(list.iter().map(|g| (g.clone(), None))),
            None if targets.is_empty() => return None,
            None => {}
        }
        self.run(targets, group, order, depth)
    }

    /// `run_async_fallback`.
    fn run(
        &mut self,
        targets: Vec<(String, Option<i64>)>,
        original: &str,
        original_order: Option<i64>,
        mut depth: u32,
    ) -> Option<String> {
        if depth >= self.fb.max_fallbacks {
            return None;
        }
        self.attempted.insert((original.to_owned(), original_order));
        for (g, order) in targets {
            if g == original && order.is_none() {
                continue;
            }
            if !self.attempted.insert((g.clone(), order)) {
                continue;
            }
            depth += 1;
            if let Some(served) = self.call(&g, order, depth) {
                return Some(served);
            }
        }
        None
    }
}

/// Parses one fallback setting: a list of one-key maps `{group: [fallback, ...]}`; a plain
/// string entry is LiteLLM's client-side form (a fallback for every group), taken as `*`.
pub fn parse_list(v: &serde_yaml::Value) -> Result<List, String> {
    let list = v.as_sequence().ok_or("expected a list of {group: [fallback, ...]}")?;
    let mut out = Vec::new();
    for (i, item) in list.iter().enumerate() {
        if let Some(s) = item.as_str() {
            out.push(("*".to_owned(), vec![s.to_owned()]));
            continue;
        }
        let map = item
            .as_mapping()
            .ok_or_else(|| format!("entry {i}: expected {{group: [fallback, ...]}}"))?;
        for (k, v) in map {
            let primary = k.as_str().ok_or("group names must be strings")?;
            let rest: Vec<String> = match v {
                serde_yaml::Value::Sequence(s) => s
                    .iter()
                    .map(|g| g.as_str().map(str::to_owned).ok_or("group names must be strings"))
                    .collect::<Result<_, _>>()?,
                serde_yaml::Value::String(s) => vec![s.clone()],
                _ => return Err(format!("'{primary}': expected a list of groups")),
            };
            out.push((primary.to_owned(), rest));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    struct World {
        fails: BTreeMap<&'static str, ChainKind>,
        levels: BTreeMap<&'static str, Vec<i64>>,
    }

    impl Outcomes for World {
        fn outcome(&self, g: &str) -> Option<ChainKind> {
            self.fails.get(g).copied()
        }
        fn order_levels(&self, g: &str) -> Vec<i64> {
            self.levels.get(g).cloned().unwrap_or_default()
        }
    }

    fn list(entries: &[(&str, &[&str])]) -> List {
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    fn all_fail(groups: &[&'static str]) -> World {
        World {
            fails: groups.iter().map(|g| (*g, ChainKind::General)).collect(),
            levels: BTreeMap::new(),
        }
    }

    #[test]
    fn chains_of_chains_are_walked_depth_first() {
        let fb = Fallbacks {
            general: list(&[("a", &["b", "c"]), ("b", &["d"]), ("c", &["a"])]),
            max_fallbacks: 5,
            ..Fallbacks::default()
        };
        let w = fb.walk("a", &all_fail(&["a", "b", "c", "d"]));
        assert_eq!(w.groups(), ["a", "b", "d", "c"]);
        assert_eq!(w.served_by, None);
        // d answers: the walk stops there, c is never tried.
        let w = fb.walk("a", &all_fail(&["a", "b"]));
        assert_eq!(w.groups(), ["a", "b", "d"]);
        assert_eq!(w.served_by.as_deref(), Some("d"));
    }

    #[test]
    fn max_fallbacks_bounds_the_walk() {
        let fb = Fallbacks {
            general: list(&[("a", &["b"]), ("b", &["c"]), ("c", &["d"])]),
            max_fallbacks: 2,
            ..Fallbacks::default()
        };
        assert_eq!(fb.walk("a", &all_fail(&["a", "b", "c", "d"])).groups(), ["a", "b", "c"]);
    }

    #[test]
    fn error_kinds_pick_their_list() {
        let fb = Fallbacks {
            general: list(&[("small", &["backup"]), ("*", &["default"])]),
            context_window: Some(list(&[("small", &["large"])])),
            content_policy: None,
            max_fallbacks: 5,
        };
        assert_eq!(
            fb.targets(ChainKind::ContextWindow, "small"),
            Some(&["large".to_owned()][..])
        );
        // Context-window setting present but no entry for the group: LiteLLM gives up.
        assert_eq!(fb.targets(ChainKind::ContextWindow, "other"), None);
        // No content-policy setting at all: the general list applies, `*` included.
        assert_eq!(
            fb.targets(ChainKind::ContentPolicy, "small"),
            Some(&["backup".to_owned()][..])
        );
        assert_eq!(fb.targets(ChainKind::General, "zzz"), Some(&["default".to_owned()][..]));
    }

    #[test]
    fn order_levels_are_walked_before_other_groups() {
        let fb = Fallbacks {
            general: list(&[("a", &["b"])]),
            max_fallbacks: 5,
            ..Fallbacks::default()
        };
        let world = World {
            fails: [("a", ChainKind::General), ("b", ChainKind::General)].into(),
            levels: [("a", vec![1, 2])].into(),
        };
        let w = fb.walk("a", &world);
        assert_eq!(
            w.steps,
            [
                Step {
                    group: "a".into(),
                    order: None
                },
                Step {
                    group: "a".into(),
                    order: Some(2)
                },
                Step {
                    group: "b".into(),
                    order: None
                },
            ]
        );
    }

    #[test]
    fn lists_parse_from_yaml() {
        let v: serde_yaml::Value = serde_yaml::from_str("[{a: [b, c]}, {d: e}, f]").unwrap();
        assert_eq!(
            parse_list(&v).unwrap(),
            list(&[("a", &["b", "c"]), ("d", &["e"]), ("*", &["f"])])
        );
        let v: serde_yaml::Value = serde_yaml::from_str("{a: b}").unwrap();
        assert!(parse_list(&v).is_err());
    }
}
