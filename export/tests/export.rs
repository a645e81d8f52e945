//! Export of random checkpoints (state, pixels, both; batch 1 and N; float16), verified with
//! ONNX Runtime against an independent float64 implementation of the layer equations.

mod common;
mod schema;

use std::path::Path;

use common::Spec;
use dreamer_bundle::{DType, names};
use dreamer_export::{ExportOptions, Precision, export};

fn export_ok(ckpt: &Path, out: &Path, options: &ExportOptions) -> dreamer_export::ExportReport {
    let report = export(ckpt, out, options).unwrap_or_else(|e| panic!("export failed: {e}"));
    schema::assert_bundle(out);
    report
}

#[test]
fn state_checkpoint_exports_and_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = Spec::state();
    let ckpt = common::write_checkpoint(&tmp.path().join("ckpt"), &spec, 1);
    let out = tmp.path().join("bundle");
    let report = export_ok(&ckpt, &out, &ExportOptions::default());
    let m = dreamer_bundle::open(&out).unwrap();
    let v = m.verification.as_ref().unwrap();
    let mut written = m.clone();
    let mut reported = report.manifest.clone();
    (written.verification, reported.verification) = (None, None);
    assert_eq!(written, reported);
    eprintln!("{v:#?}");
    assert_eq!(v.trajectory_steps, 500);
    assert!(v.trajectory_step_max_abs_err.unwrap() < 1e-5);
    assert!(v.trajectory_final_latent_max_abs_err.unwrap() < 1e-4);
    for role in dreamer_bundle::GRAPH_ROLES {
        assert!(v.random_max_abs_err[role] < 1e-5, "{role}");
        assert!(m.files.contains_key(&format!("{role}.onnx")), "{role}");
    }
    assert_eq!(m.task.name, "pendulum");
    assert_eq!(m.task.action_repeat, 2);
    // Pendulum-v1 steps 0.05 s; two per decision.
    assert!((m.task.control_period_s - 0.1).abs() < 1e-12);
    assert_eq!(m.observation.state.as_ref().unwrap().fields.len(), 3);
    assert_eq!(m.action.physical_low.len(), 1);
    assert_eq!(m.latent.deter, spec.d as u32);
    assert_eq!(m.latent.stoch, spec.s as u32);
    assert_eq!(m.latent.embed, spec.u as u32);
    assert_eq!(m.observation.state.as_ref().unwrap().size, 3);
    assert!(m.observation.pixels.is_none());
    assert_eq!(m.training.env_steps, 12000);
    assert_eq!(m.training.updates, 340);
    assert_eq!(m.training.eval_return, Some(123.5));
    assert_eq!(m.training.config["model.deter"], "12");
    assert!(
        v.onnxruntime_version.starts_with("1."),
        "{}",
        v.onnxruntime_version
    );
    let policy = m.graph(dreamer_bundle::POLICY_STEP).unwrap();
    let obs = policy.input("policy_step", names::OBS_STATE).unwrap();
    assert_eq!((obs.dtype, obs.shape.clone()), (DType::Float32, vec![1, 3]));
    assert_eq!(
        policy.output("policy_step", names::SURPRISE).unwrap().shape,
        vec![1]
    );
}

#[test]
fn pixel_checkpoint_exports_and_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = Spec::pixels();
    let ckpt = common::write_checkpoint(&tmp.path().join("ckpt"), &spec, 2);
    let out = tmp.path().join("bundle");
    let report = export_ok(&ckpt, &out, &ExportOptions::default());
    let m = report.manifest;
    let v = m.verification.as_ref().unwrap();
    eprintln!("{v:#?}");
    assert!(v.trajectory_step_max_abs_err.unwrap() < 1e-5);
    assert_eq!(m.latent.embed, 32 * spec.c as u32);
    let enc = m.graph(dreamer_bundle::ENCODER).unwrap();
    let px = enc.input("encoder", names::OBS_PIXELS).unwrap();
    assert_eq!(
        (px.dtype, px.shape.clone()),
        (DType::Uint8, vec![1, 64, 64, 3])
    );
}

#[test]
fn batch_n_with_both_observations_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = Spec {
        obs: "both",
        task: "cartpole-swingup",
        o: 5,
        steps: 40,
        cases: 7,
        ..Spec::state()
    };
    let ckpt = common::write_checkpoint(&tmp.path().join("ckpt"), &spec, 3);
    let out = tmp.path().join("bundle");
    let options = ExportOptions {
        batch: 3,
        ..ExportOptions::default()
    };
    let m = export_ok(&ckpt, &out, &options).manifest;
    assert_eq!(m.batch, 3);
    assert_eq!(m.latent.embed, (32 * spec.c + spec.u) as u32);
    let v = m.verification.as_ref().unwrap();
    eprintln!("{v:#?}");
    let policy = m.graph(dreamer_bundle::POLICY_STEP).unwrap();
    assert_eq!(
        policy
            .input("policy_step", names::OBS_PIXELS)
            .unwrap()
            .shape[0],
        3
    );
    assert_eq!(
        policy.output("policy_step", names::SURPRISE).unwrap().shape,
        vec![3]
    );
}

#[test]
fn float16_weights_halve_the_graphs_and_stay_close() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = Spec {
        u: 64,
        d: 48,
        h: 48,
        ..Spec::state()
    };
    let ckpt = common::write_checkpoint(&tmp.path().join("ckpt"), &spec, 4);
    let f32_report = export_ok(&ckpt, &tmp.path().join("f32"), &ExportOptions::default());
    let options = ExportOptions {
        precision: Precision::Float16,
        ..ExportOptions::default()
    };
    let f16_report = export_ok(&ckpt, &tmp.path().join("f16"), &options);
    assert_eq!(f16_report.manifest.precision, "float16");
    let v = f16_report.manifest.verification.as_ref().unwrap();
    eprintln!("{v:#?}");
    let r = v
        .returns
        .as_ref()
        .expect("a float16 bundle's return is checked");
    assert_eq!(r.episodes as usize, options.return_episodes);
    assert!(r.drop <= r.tolerance);
    let size = |r: &dreamer_export::ExportReport| r.file_bytes["policy_step.onnx"] as f64;
    let ratio = size(&f16_report) / size(&f32_report);
    assert!(ratio < 0.6, "float16 policy_step is {ratio} of float32");
}

/// Op types of one graph file, in order.
fn op_types(path: &Path) -> Vec<String> {
    use protobuf::Message;
    let model = onnx_protobuf::ModelProto::parse_from_bytes(&std::fs::read(path).unwrap()).unwrap();
    model.graph.node.iter().map(|n| n.op_type.clone()).collect()
}

/// Exports `ckpt` to `out` in `form` and checks the manifest records the form and the
/// verification met the float32 bounds; returns the manifest.
fn export_form(
    ckpt: &Path,
    out: &Path,
    form: dreamer_bundle::GraphForm,
) -> dreamer_bundle::Manifest {
    let options = ExportOptions {
        graph_form: form,
        ..ExportOptions::default()
    };
    export_ok(ckpt, out, &options);
    let m = dreamer_bundle::open(out).unwrap();
    assert_eq!(m.graph_form, form);
    let v = m.verification.as_ref().unwrap();
    assert!(v.trajectory_step_max_abs_err.unwrap() < 1e-5, "{form:?}");
    assert!(
        v.trajectory_final_latent_max_abs_err.unwrap() < 1e-4,
        "{form:?}"
    );
    for role in dreamer_bundle::GRAPH_ROLES {
        assert!(v.random_max_abs_err[role] < 1e-5, "{form:?} {role}");
    }
    m
}

/// Both graph forms verify against the same float64 reference with the same bounds; the
/// compact one (the default) computes the same function in far fewer nodes.
#[test]
fn both_graph_forms_verify_and_the_compact_one_has_fewer_nodes() {
    use dreamer_bundle::GraphForm;
    let tmp = tempfile::tempdir().unwrap();
    let spec = Spec::state();
    let ckpt = common::write_checkpoint(&tmp.path().join("ckpt"), &spec, 1);
    let mut nodes = Vec::new();
    for form in [GraphForm::Compact, GraphForm::Decomposed] {
        let out = tmp.path().join(form.name());
        export_form(&ckpt, &out, form);
        let ops = op_types(&out.join("policy_step.onnx"));
        let grus = ops.iter().filter(|op| *op == "GRU").count();
        assert_eq!(
            grus,
            usize::from(form == GraphForm::Compact),
            "{form:?}: {ops:?}"
        );
        nodes.push(ops.len());
    }
    // 81 nodes decomposed; the GRU, softplus, actor constants and KL take 26 fewer compact.
    assert!(
        nodes[0] + 20 <= nodes[1],
        "compact {} vs decomposed {}",
        nodes[0],
        nodes[1]
    );
}

/// With `model.symlog_obs` the encoder graph applies `sign(x) ln(1 + |x|)` to the state, in
/// both graph forms, within the same bounds; the manifest's training config records it.
#[test]
fn a_symlog_encoder_exports_and_verifies() {
    use dreamer_bundle::GraphForm;
    let tmp = tempfile::tempdir().unwrap();
    let spec = Spec {
        symlog: true,
        ..Spec::state()
    };
    let ckpt = common::write_checkpoint(&tmp.path().join("ckpt"), &spec, 1);
    for form in [GraphForm::Compact, GraphForm::Decomposed] {
        let out = tmp.path().join(form.name());
        let m = export_form(&ckpt, &out, form);
        assert_eq!(m.training.config["model.symlog_obs"], "true");
        let ops = op_types(&out.join("encoder.onnx"));
        assert!(ops.iter().any(|op| op == "Sign"), "{form:?}: {ops:?}");
    }
}
