//! Every manifest value is checked against the others and against the graphs' declared
//! shapes; a violation names the field and the value.

mod common;

use std::path::Path;

use dreamer_bundle::contract::TaskDefinition;
use dreamer_bundle::{
    DType, ENVIRONMENT_SOURCE, ENVIRONMENT_VERSION, EnvironmentInfo, LayoutInfo, Manifest,
    parse_manifest,
};

/// The error `parse_manifest` gives for `common::manifest()` changed by `change`.
fn error_for(change: impl FnOnce(&mut Manifest)) -> String {
    let mut m = common::manifest();
    // Files as a written bundle lists them, so only `change` can be wrong.
    for g in m.graphs.values() {
        m.files.insert(g.file.clone(), "0".repeat(64));
    }
    change(&mut m);
    let bytes = serde_json::to_vec(&m).unwrap();
    match parse_manifest(&bytes, Path::new("b/manifest.json")) {
        Ok(_) => panic!("accepted"),
        Err(e) => e.to_string(),
    }
}

fn assert_names(error: &str, parts: &[&str]) {
    for part in parts {
        assert!(error.contains(part), "`{part}` missing from: {error}");
    }
}

#[test]
fn the_fixture_is_valid() {
    let mut m = common::manifest();
    for g in m.graphs.values() {
        m.files.insert(g.file.clone(), "0".repeat(64));
    }
    let bytes = serde_json::to_vec(&m).unwrap();
    assert_eq!(parse_manifest(&bytes, Path::new("m")).unwrap(), m);
}

#[test]
fn task_values_are_checked() {
    let e = error_for(|m| m.task.action_repeat = 0);
    assert_names(&e, &["b/manifest.json", "task.action_repeat is 0"]);
    let e = error_for(|m| m.task.control_period_s = -1.0);
    assert_names(&e, &["task.control_period_s is -1"]);
    let e = error_for(|m| m.task.control_period_s = 0.0);
    assert_names(&e, &["task.control_period_s is 0"]);
    let e = error_for(|m| m.task.episode_decisions = 0);
    assert_names(&e, &["task.episode_decisions is 0"]);
    let e = error_for(|m| m.batch = 0);
    assert_names(&e, &["batch is 0"]);
}

#[test]
fn state_field_names_must_match_the_state_size() {
    let e = error_for(|m| {
        m.observation
            .state
            .as_mut()
            .unwrap()
            .fields
            .push("extra".into());
    });
    assert_names(&e, &["observation.state.fields", "4 names", "size is 3"]);
}

#[test]
fn latent_sizes_must_match_the_graphs() {
    let e = error_for(|m| m.latent.deter = 99);
    assert_names(
        &e,
        &["latent.deter is 99 but graph rssm_obs_step input h is [1, 128]"],
    );
    let e = error_for(|m| m.latent.stoch = 5);
    assert_names(
        &e,
        &["latent.stoch is 5 but graph rssm_obs_step input s is [1, 4]"],
    );
    let e = error_for(|m| m.latent.embed = 7);
    assert_names(
        &e,
        &["latent.embed is 7 but graph encoder output embed is [1, 6]"],
    );
    let e = error_for(|m| m.batch = 2);
    assert_names(
        &e,
        &["batch is 2 but graph encoder input obs_state is [1, 3]"],
    );
}

#[test]
fn action_bounds_are_checked() {
    let e = error_for(|m| {
        m.action.physical_low[1] = 3.0;
    });
    assert_names(
        &e,
        &["action.physical_low[1] is 3 but must be below action.physical_high[1] = 2"],
    );
    let e = error_for(|m| m.action.low = vec![-1.0]);
    assert_names(&e, &["action.low has 1 values", "action.size is 2"]);
    let e = error_for(|m| m.action.high[0] = f32::NAN);
    // JSON has no NaN: serde writes null, which is not a number.
    assert_names(&e, &["not a valid manifest"]);
    let e = error_for(|m| m.action.size = 3);
    assert_names(&e, &["action.low has 2 values", "action.size is 3"]);
}

#[test]
fn graph_declarations_are_checked() {
    let e = error_for(|m| {
        m.graphs.remove("actor");
    });
    assert_names(&e, &["graphs has no `actor` graph"]);
    let e = error_for(|m| {
        m.graphs.get_mut("actor").unwrap().inputs[0].dtype = DType::Uint8;
    });
    assert_names(&e, &["graphs.actor.inputs.feat.dtype is Uint8"]);
    let e = error_for(|m| {
        m.graphs.get_mut("actor").unwrap().inputs.pop();
    });
    assert_names(&e, &["graphs.actor.inputs lacks input `action_noise`"]);
    let e = error_for(|m| {
        m.graphs.get_mut("actor").unwrap().outputs[0].shape = vec![1, 2, 1];
    });
    assert_names(&e, &["graphs.actor.outputs.action.shape is [1, 2, 1]"]);
    let e = error_for(|m| {
        let obs = m.observation.state.take();
        m.observation.pixels = None;
        let _ = obs;
    });
    assert_names(&e, &["observation has neither"]);
}

#[test]
fn other_values_are_checked() {
    let e = error_for(|m| m.precision = "int4".into());
    assert_names(&e, &["precision is `int4`"]);
    let e = error_for(|m| m.latent.min_std = -0.5);
    assert_names(&e, &["latent.min_std is -0.5"]);
    // The fixture's stochastic state is 4 wide: 2 categoricals of 2, or of 4 would do.
    for classes in [1, 3] {
        let e = error_for(|m| m.latent.classes = classes);
        assert_names(
            &e,
            &[&format!(
                "latent.classes is {classes} but must be 0 (Gaussian) or at least 2 and divide latent.stoch (4)"
            )],
        );
    }
    let e = error_for(|m| m.latent.initial = "random".into());
    assert_names(&e, &["latent.initial is `random`"]);
    let e = error_for(|m| {
        m.files.insert("actor.onnx".into(), "ABC".into());
    });
    assert_names(&e, &["files.\"actor.onnx\"", "not a lowercase hex sha256"]);
}

#[test]
fn deep_nesting_is_refused_before_parsing() {
    // Deep enough to exhaust a small stack inside serde, shallow enough for serde_json.
    let nested = format!("{}1{}", "[".repeat(100), "]".repeat(100));
    let bytes =
        format!("{{\"format_version\": 2, \"task\": {{\"name\": \"[[[\", \"x\": {nested}}}}}");
    let e = std::thread::Builder::new()
        .stack_size(256 << 10)
        .spawn(move || parse_manifest(bytes.as_bytes(), Path::new("m")).map(|_| ()))
        .unwrap()
        .join()
        .unwrap()
        .unwrap_err()
        .to_string();
    assert_names(
        &e,
        &["m: (document) nests arrays and objects deeper than 32 levels"],
    );
}

/// The fixture as a bridged task: `gym:Reacher-v9`, 3 state values from two arrays.
fn bridged(m: &mut Manifest) {
    m.task.name = "gym:Reacher-v9".into();
    m.contract.task_definition = TaskDefinition {
        source: ENVIRONMENT_SOURCE.into(),
        version: ENVIRONMENT_VERSION,
    };
    let leaf = |name: &str, shape: Vec<usize>| LayoutInfo {
        name: name.into(),
        shape,
        dtype: "float64".into(),
    };
    m.environment = Some(EnvironmentInfo {
        package: "gymnasium".into(),
        id: "Reacher-v9".into(),
        kwargs: serde_json::Map::from_iter([("g".to_string(), serde_json::json!(9.8))]),
        state_layout: vec![leaf("angle", vec![]), leaf("target", vec![2])],
        action_space: "Box(-1.0, 1.0, (2,), float32)".into(),
        pixels: None,
        episode_env_steps: 50,
        versions: [("gymnasium".to_string(), "1.4.0".to_string())].into(),
    });
}

fn environment(m: &mut Manifest) -> &mut EnvironmentInfo {
    m.environment.as_mut().unwrap()
}

#[test]
fn a_python_environment_must_be_the_task_and_cover_its_state() {
    let mut m = common::manifest();
    bridged(&mut m);
    for g in m.graphs.values() {
        m.files.insert(g.file.clone(), "0".repeat(64));
    }
    let bytes = serde_json::to_vec(&m).unwrap();
    assert_eq!(parse_manifest(&bytes, Path::new("m")).unwrap(), m);

    let e = error_for(|m| {
        bridged(m);
        m.environment = None;
    });
    assert_names(&e, &["contract.task_definition.source", "no `environment`"]);
    let e = error_for(|m| {
        bridged(m);
        m.contract.task_definition.source = "dreamer-tasks".into();
    });
    assert_names(&e, &["contract.task_definition", "dreamer-tasks version 1"]);
    let e = error_for(|m| {
        bridged(m);
        environment(m).package = "isaac".into();
    });
    assert_names(&e, &["environment.package", "`isaac`"]);
    let e = error_for(|m| {
        bridged(m);
        environment(m).id = "Reacher-v4".into();
    });
    assert_names(&e, &["environment.id", "`Reacher-v4`", "`gym:Reacher-v9`"]);
    let e = error_for(|m| {
        bridged(m);
        environment(m).package = "dm_control".into();
    });
    assert_names(&e, &["environment.id", "dm_control", "`gym:Reacher-v9`"]);
    let e = error_for(|m| {
        bridged(m);
        environment(m).state_layout[1].shape = vec![3];
    });
    assert_names(
        &e,
        &[
            "environment.state_layout",
            "4 values",
            "observation.state.size is 3",
        ],
    );
    let e = error_for(|m| {
        bridged(m);
        environment(m).pixels = Some("render:rgb_array".into());
    });
    assert_names(
        &e,
        &["environment.pixels", "render:rgb_array", "takes no pixels"],
    );
    let e = error_for(|m| {
        bridged(m);
        environment(m).episode_env_steps = 0;
    });
    assert_names(&e, &["environment.episode_env_steps is 0"]);
}
