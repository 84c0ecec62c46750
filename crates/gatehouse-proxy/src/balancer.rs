//! Smooth weighted round robin (as nginx does it), with state kept per upstream id outside the
//! config snapshot so a reload that leaves the targets alone does not reset the rotation.

use std::collections::HashMap;
use std::sync::Arc;

use uuid::Uuid;

use crate::snapshot::TargetRt;

struct State {
    targets: Arc<[Arc<TargetRt>]>,
    current: Vec<i64>,
}

/// Balancer state of one worker.
#[derive(Default)]
pub struct Balancer {
    states: HashMap<Uuid, State>,
}

impl Balancer {
    /// Picks the next target of an upstream, skipping the indexes in `exclude`.
    pub fn pick(
        &mut self,
        id: Uuid,
        targets: &Arc<[Arc<TargetRt>]>,
        exclude: &[usize],
    ) -> Option<usize> {
        let st = self.states.entry(id).or_insert_with(|| State {
            targets: targets.clone(),
            current: vec![0; targets.len()],
        });
        if !Arc::ptr_eq(&st.targets, targets) {
            // Targets changed (or the snapshot was rebuilt): keep the rotation of the ones that stayed.
            let mut current = vec![0; targets.len()];
            for (i, t) in targets.iter().enumerate() {
                if let Some(j) = st.targets.iter().position(|o| o.key == t.key) {
                    current[i] = st.current[j];
                }
            }
            *st = State {
                targets: targets.clone(),
                current,
            };
        }
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for (i, t) in targets.iter().enumerate() {
            if exclude.contains(&i) {
                continue;
            }
            let w = i64::from(t.weight);
            st.current[i] += w;
            total += w;
            if best.is_none_or(|b| st.current[i] > st.current[b]) {
                best = Some(i);
            }
        }
        let b = best?;
        st.current[b] -= total;
        Some(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn t(key: &str, weight: u32) -> Arc<TargetRt> {
        Arc::new(TargetRt {
            key: key.into(),
            tls_name: None,
            host: "h".into(),
            port: 1,
            host_header: HeaderValue::from_static("h"),
            weight,
        })
    }

    #[test]
    fn weights_are_respected_smoothly() {
        let targets: Arc<[Arc<TargetRt>]> = vec![t("a", 5), t("b", 1), t("c", 1)].into();
        let mut b = Balancer::default();
        let id = Uuid::nil();
        let picks: Vec<usize> = (0..7).map(|_| b.pick(id, &targets, &[]).unwrap()).collect();
        assert_eq!(picks.iter().filter(|&&i| i == 0).count(), 5);
        assert_eq!(picks, vec![0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(b.pick(id, &targets, &[0, 1]), Some(2));
        assert_eq!(b.pick(id, &targets, &[0, 1, 2]), None);
    }
}
