//! The standard wiring of the bundle's graphs into step schemes.

use std::collections::BTreeMap;

use super::{FUSED, ObservationKind, OutputRef, SEPARATE, SPLIT, Source, StepScheme};
use crate::{ACTOR, ENCODER, POLICY_OBSERVE, POLICY_STEP, RSSM_IMG_STEP, RSSM_OBS_STEP, names};

/// The wiring of the bundle's six graphs (see [`crate::names`]) into the three step schemes,
/// for a bundle whose graphs take the observations `observations`.
pub fn standard_steps(observations: &[ObservationKind]) -> BTreeMap<String, StepScheme> {
    use names::*;
    let out = |graph: &str, output: &str| OutputRef {
        graph: graph.to_string(),
        output: output.to_string(),
    };
    let this = |parts: &[(&str, &str)]| Source::ThisStep {
        concat: parts.iter().map(|(g, o)| out(g, o)).collect(),
    };
    let previous = |graph: &str, output: &str| Source::PreviousStep {
        graph: graph.to_string(),
        output: output.to_string(),
    };
    let obs = || {
        observations.iter().map(|&kind| {
            let name = match kind {
                ObservationKind::State => OBS_STATE,
                ObservationKind::Pixels => OBS_PIXELS,
            };
            (name, Source::Observation { observation: kind })
        })
    };
    let inputs = |list: Vec<(&str, Source)>| -> BTreeMap<String, Source> {
        list.into_iter().map(|(n, s)| (n.to_string(), s)).collect()
    };
    let scheme = |runs: Vec<(&str, BTreeMap<String, Source>)>,
                  action: OutputRef,
                  surprise: Option<OutputRef>| StepScheme {
        runs: runs.iter().map(|(g, _)| g.to_string()).collect(),
        inputs: runs.into_iter().map(|(g, i)| (g.to_string(), i)).collect(),
        action,
        surprise,
    };

    let mut fused = obs().collect::<Vec<_>>();
    fused.extend([
        (H, previous(POLICY_STEP, H_NEXT)),
        (S, previous(POLICY_STEP, S_NEXT)),
        (PREV_ACTION, previous(POLICY_STEP, ACTION)),
        (NOISE, Source::Noise),
        (ACTION_NOISE, Source::Noise),
    ]);
    let fused = scheme(
        vec![(POLICY_STEP, inputs(fused))],
        out(POLICY_STEP, ACTION),
        Some(out(POLICY_STEP, SURPRISE)),
    );

    let separate = scheme(
        vec![
            (ENCODER, inputs(obs().collect())),
            (
                RSSM_OBS_STEP,
                inputs(vec![
                    (H, previous(RSSM_OBS_STEP, H_NEXT)),
                    (S, previous(RSSM_OBS_STEP, S_NEXT)),
                    (PREV_ACTION, previous(ACTOR, ACTION)),
                    (EMBED, this(&[(ENCODER, EMBED)])),
                    (NOISE, Source::Noise),
                ]),
            ),
            (
                ACTOR,
                inputs(vec![
                    (
                        FEAT,
                        this(&[(RSSM_OBS_STEP, H_NEXT), (RSSM_OBS_STEP, S_NEXT)]),
                    ),
                    (ACTION_NOISE, Source::Noise),
                ]),
            ),
        ],
        out(ACTOR, ACTION),
        None,
    );

    // The transition needs only the previous step, so `rssm_img_step` can run before the
    // observation arrives; its sample `s_next` is unused, hence zero noise.
    let mut observe = obs().collect::<Vec<_>>();
    observe.extend([
        (H_NEXT, this(&[(RSSM_IMG_STEP, H_NEXT)])),
        (PRIOR_MEAN, this(&[(RSSM_IMG_STEP, MEAN)])),
        (PRIOR_STD, this(&[(RSSM_IMG_STEP, STD)])),
        (NOISE, Source::Noise),
        (ACTION_NOISE, Source::Noise),
    ]);
    let split = scheme(
        vec![
            (
                RSSM_IMG_STEP,
                inputs(vec![
                    (H, previous(RSSM_IMG_STEP, H_NEXT)),
                    (S, previous(POLICY_OBSERVE, S_NEXT)),
                    (ACTION, previous(POLICY_OBSERVE, ACTION)),
                    (NOISE, Source::Zeros),
                ]),
            ),
            (POLICY_OBSERVE, inputs(observe)),
        ],
        out(POLICY_OBSERVE, ACTION),
        Some(out(POLICY_OBSERVE, SURPRISE)),
    );

    BTreeMap::from([
        (FUSED.to_string(), fused),
        (SEPARATE.to_string(), separate),
        (SPLIT.to_string(), split),
    ])
}
