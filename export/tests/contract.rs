//! The manifest's `contract` as the exporter writes it, and `Contract::validate` refusing
//! contracts that do not fit the graphs or the rest of the manifest, each by field.

mod common;

use std::path::Path;

use common::Spec;
use dreamer_bundle::contract::{self, ObservationKind, OutputRef, PixelEncoding, Source};
use dreamer_bundle::{BundleError, Manifest, names};
use dreamer_export::{ExportOptions, export};

const ORIGIN: &str = "test/manifest.json";

fn exported(dir: &Path, spec: Spec, batch: usize) -> Manifest {
    let spec = Spec {
        steps: 5,
        cases: 2,
        ..spec
    };
    let ckpt = common::write_checkpoint(&dir.join("ckpt"), &spec, 51);
    let options = ExportOptions {
        batch,
        verify: false,
        ..ExportOptions::default()
    };
    export(&ckpt, &dir.join("bundle"), &options)
        .unwrap_or_else(|e| panic!("export failed: {e}"))
        .manifest
}

fn validate(m: &Manifest) -> Result<(), BundleError> {
    m.contract.validate(m, Path::new(ORIGIN))
}

#[test]
fn the_exporter_writes_the_standard_wiring() {
    let tmp = tempfile::tempdir().unwrap();
    let both = Spec {
        obs: "both",
        task: "cartpole-swingup",
        o: 5,
        ..Spec::state()
    };
    let m = exported(tmp.path(), both, 2);
    validate(&m).unwrap();
    let kinds = [ObservationKind::State, ObservationKind::Pixels];
    assert_eq!(m.contract.steps, contract::standard_steps(&kinds));
    let fused = &m.contract.steps[contract::FUSED];
    let previous = |graph: &str, output: &str| Source::PreviousStep {
        graph: graph.to_string(),
        output: output.to_string(),
    };
    let wiring = &fused.inputs[dreamer_bundle::POLICY_STEP];
    assert_eq!(wiring[names::H], previous("policy_step", names::H_NEXT));
    assert_eq!(wiring[names::S], previous("policy_step", names::S_NEXT));
    assert_eq!(
        wiring[names::PREV_ACTION],
        previous("policy_step", names::ACTION)
    );
    assert_eq!(wiring[names::NOISE], Source::Noise);
    assert_eq!(
        wiring[names::OBS_PIXELS],
        Source::Observation {
            observation: ObservationKind::Pixels
        }
    );
    let split = &m.contract.steps[contract::SPLIT];
    assert_eq!(split.runs, ["rssm_img_step", "policy_observe"]);
    assert_eq!(
        split.inputs["policy_observe"][names::PRIOR_MEAN],
        Source::ThisStep {
            concat: vec![OutputRef {
                graph: "rssm_img_step".to_string(),
                output: names::MEAN.to_string(),
            }]
        }
    );
    assert_eq!(split.inputs["rssm_img_step"][names::NOISE], Source::Zeros);
    assert!(m.contract.steps[contract::SEPARATE].surprise.is_none());
}

/// One way to break a valid manifest, and the field its error must name.
type Breakage = (&'static str, fn(&mut Manifest));

fn source_of<'a>(m: &'a mut Manifest, scheme: &str, graph: &str, input: &str) -> &'a mut Source {
    m.contract
        .steps
        .get_mut(scheme)
        .unwrap()
        .inputs
        .get_mut(graph)
        .unwrap()
        .get_mut(input)
        .unwrap()
}

const BREAKAGES: &[Breakage] = &[
    ("contract.steps.fused.inputs.policy_step.h", |m| {
        let inputs = m
            .contract
            .steps
            .get_mut("fused")
            .unwrap()
            .inputs
            .get_mut("policy_step");
        inputs.unwrap().remove("h");
    }),
    ("contract.steps.fused.inputs.policy_step.h", |m| {
        *source_of(m, "fused", "policy_step", "h") = Source::PreviousStep {
            graph: "policy_step".to_string(),
            output: "h_nxt".to_string(),
        };
    }),
    // s is [1, S], h_next [1, D]: S != D in the test sizes.
    ("contract.steps.fused.inputs.policy_step.s", |m| {
        *source_of(m, "fused", "policy_step", "s") = Source::PreviousStep {
            graph: "policy_step".to_string(),
            output: "h_next".to_string(),
        };
    }),
    // The observation then reaches no input.
    ("contract.steps.fused.inputs", |m| {
        *source_of(m, "fused", "policy_step", "obs_state") = Source::Noise;
    }),
    ("contract.steps.fused.inputs.policy_step.lidar", |m| {
        let inputs = m
            .contract
            .steps
            .get_mut("fused")
            .unwrap()
            .inputs
            .get_mut("policy_step");
        inputs.unwrap().insert("lidar".to_string(), Source::Zeros);
    }),
    ("contract.steps.separate.inputs.actor.feat", |m| {
        let Source::ThisStep { concat } = source_of(m, "separate", "actor", "feat") else {
            panic!("feat is a concatenation")
        };
        concat.pop();
    }),
    // policy_observe cannot read its own output within the step.
    ("contract.steps.split.inputs.policy_observe.h_next", |m| {
        *source_of(m, "split", "policy_observe", "h_next") = Source::ThisStep {
            concat: vec![OutputRef {
                graph: "policy_observe".to_string(),
                output: "s_next".to_string(),
            }],
        };
    }),
    ("contract.steps.split.runs[2]", |m| {
        m.contract
            .steps
            .get_mut("split")
            .unwrap()
            .runs
            .push("critic".to_string());
    }),
    ("contract.steps.split.inputs.actor", |m| {
        let actor = m.contract.steps["separate"].inputs["actor"].clone();
        let split = m.contract.steps.get_mut("split").unwrap();
        split.inputs.insert("actor".to_string(), actor);
    }),
    ("contract.steps.fused.action", |m| {
        m.contract.steps.get_mut("fused").unwrap().action.output = "surprise".to_string();
    }),
    ("contract.steps.fused.surprise", |m| {
        let fused = m.contract.steps.get_mut("fused").unwrap();
        fused.surprise.as_mut().unwrap().output = "h_next".to_string();
    }),
    ("contract.steps", |m| m.contract.steps.clear()),
    ("contract.observation_encoding.pixels", |m| {
        m.contract.observation_encoding.pixels = Some(PixelEncoding {
            values: contract::Values::Raw,
            channel_order: contract::ChannelOrder::Rgb,
        });
    }),
    ("contract.observation_encoding.state", |m| {
        m.contract.observation_encoding.state = None;
    }),
    ("contract.initial_state.value", |m| {
        m.latent.initial = "ones".to_string();
    }),
    ("contract.action_mapping.formula", |m| {
        m.contract.action_mapping.formula = "physical = action".to_string();
    }),
    ("task.control_period_s", |m| {
        m.contract.timing.physics_step_s = 0.04;
    }),
    ("contract.timing.physics_step_s", |m| {
        m.contract.timing.physics_step_s = f64::NAN;
    }),
    ("contract.task_definition.version", |m| {
        m.contract.task_definition.version = 0;
    }),
];

#[test]
fn validation_names_the_field_of_each_breakage() {
    let tmp = tempfile::tempdir().unwrap();
    let m = exported(tmp.path(), Spec::state(), 1);
    validate(&m).unwrap();
    for (field, breakage) in BREAKAGES {
        let mut broken = m.clone();
        breakage(&mut broken);
        let err = validate(&broken)
            .err()
            .unwrap_or_else(|| panic!("breaking {field} was accepted"));
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("{ORIGIN}: {field} ")),
            "breaking {field} gave: {text}"
        );
    }
}

#[test]
fn reading_a_bundle_checks_its_contract() {
    let tmp = tempfile::tempdir().unwrap();
    let mut m = exported(tmp.path(), Spec::state(), 1);
    m.contract.timing.physics_step_s *= 2.0;
    let text = serde_json::to_vec(&m).unwrap();
    let err = dreamer_bundle::parse_manifest(&text, Path::new(ORIGIN)).unwrap_err();
    assert!(err.to_string().contains("task.control_period_s"), "{err}");
}

#[test]
fn every_task_has_a_definition_version() {
    for task in dreamer_tasks::TASK_NAMES {
        let version = dreamer_tasks::definition_version(task);
        assert!(version.is_some_and(|v| v >= 1), "{task}: {version:?}");
    }
    assert_eq!(dreamer_tasks::definition_version("pendulum-v0"), None);
}
