//! Start order: services grouped into levels, each level depending only on earlier ones, so
//! a level starts in parallel and the next waits for it to be healthy.

use std::collections::BTreeMap;

/// Services that depend on each other in a circle: none of them can start first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("dependency cycle among services: {}", .0.join(", "))]
pub struct Cycle(pub Vec<String>);

/// Levels of service names (sorted within a level, for stable output), over `(name,
/// depends_on)` pairs; dependencies outside the set are ignored (the caller chose which
/// services to start).
pub fn levels_of<'a>(nodes: impl Iterator<Item = (&'a str, &'a [String])>) -> Result<Vec<Vec<String>>, Cycle> {
    let nodes: BTreeMap<&str, &[String]> = nodes.collect();
    let mut placed: BTreeMap<&str, usize> = BTreeMap::new();
    let mut out: Vec<Vec<String>> = Vec::new();
    while placed.len() < nodes.len() {
        let ready: Vec<&str> = nodes
            .iter()
            .filter(|(n, _)| !placed.contains_key(*n))
            .filter(|(_, deps)| {
                deps.iter()
                    .all(|d| placed.contains_key(d.as_str()) || !nodes.contains_key(d.as_str()))
            })
            .map(|(n, _)| *n)
            .collect();
        if ready.is_empty() {
            let stuck: Vec<String> = nodes
                .keys()
                .filter(|n| !placed.contains_key(*n))
                .map(|n| (*n).to_owned())
                .collect();
            return Err(Cycle(stuck));
        }
        for n in &ready {
            placed.insert(n, out.len());
        }
        out.push(ready.into_iter().map(str::to_owned).collect());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn independent_services_share_a_level() {
        let deps = [
            ("router", vec!["redis".to_owned(), "sim".to_owned()]),
            ("redis", vec![]),
            ("sim", vec![]),
        ];
        let lv = levels_of(deps.iter().map(|(n, d)| (*n, d.as_slice()))).unwrap();
        assert_eq!(lv, vec![vec!["redis", "sim"], vec!["router"]]);
    }

    #[test]
    fn cycles_are_reported() {
        let deps = [("a", vec!["b".to_owned()]), ("b", vec!["a".to_owned()])];
        let err = levels_of(deps.iter().map(|(n, d)| (*n, d.as_slice()))).unwrap_err();
        assert_eq!(err, Cycle(vec!["a".into(), "b".into()]));
        assert!(err.to_string().contains("cycle among services: a, b"), "{err}");
    }
}
