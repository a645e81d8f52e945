//! ONNX Runtime loads dynamically and runs a graph built here with onnx-protobuf.

use onnx_protobuf::{
    GraphProto, Message, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TypeProto,
    ValueInfoProto, tensor_proto::DataType, tensor_shape_proto, type_proto,
};
use ort::session::Session;
use ort::value::Tensor;

fn value_info(name: &str, shape: &[i64]) -> ValueInfoProto {
    let mut tensor = type_proto::Tensor::new();
    tensor.elem_type = DataType::FLOAT as i32;
    let dims = shape.iter().map(|&d| {
        let mut dim = tensor_shape_proto::Dimension::new();
        dim.value = Some(tensor_shape_proto::dimension::Value::DimValue(d));
        dim
    });
    tensor.shape.mut_or_insert_default().dim = dims.collect();
    let mut ty = TypeProto::new();
    ty.value = Some(type_proto::Value::TensorType(tensor));
    let mut info = ValueInfoProto::new();
    info.name = name.into();
    info.type_ = Some(ty).into();
    info
}

fn initializer(name: &str, shape: &[i64], values: &[f32]) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.into();
    t.data_type = DataType::FLOAT as i32;
    t.dims = shape.to_vec();
    t.raw_data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    t
}

fn node(op: &str, inputs: &[&str], output: &str) -> NodeProto {
    let mut n = NodeProto::new();
    n.op_type = op.into();
    n.input = inputs.iter().map(|s| s.to_string()).collect();
    n.output = vec![output.into()];
    n.name = output.into();
    n
}

/// y = relu(x W + b), x: [1, 3], W: [3, 2], b: [2]
fn linear_relu_model() -> Vec<u8> {
    let mut graph = GraphProto::new();
    graph.name = "linear_relu".into();
    graph.node = vec![
        node("MatMul", &["x", "w"], "xw"),
        node("Add", &["xw", "b"], "pre"),
        node("Relu", &["pre"], "y"),
    ];
    graph.initializer = vec![
        initializer("w", &[3, 2], &[1.0, -1.0, 2.0, 0.5, -3.0, 1.0]),
        initializer("b", &[2], &[0.25, -10.0]),
    ];
    graph.input = vec![value_info("x", &[1, 3])];
    graph.output = vec![value_info("y", &[1, 2])];
    let mut opset = OperatorSetIdProto::new();
    opset.version = 17;
    let mut model = ModelProto::new();
    model.ir_version = 8;
    model.opset_import = vec![opset];
    model.graph = Some(graph).into();
    model.write_to_bytes().expect("serialise model")
}

#[test]
fn graph_built_with_onnx_protobuf_gives_expected_numbers() {
    let onnxruntime = dreamer_ort::load(None).unwrap_or_else(|e| panic!("{e}"));
    let mut session = Session::builder(onnxruntime.environment())
        .unwrap()
        .commit_from_memory(&linear_relu_model())
        .expect("session from the built graph");
    let x = Tensor::from_array(([1usize, 3], vec![1.0f32, 2.0, 3.0])).unwrap();
    let outputs = session.run(ort::inputs!["x" => x]).unwrap();
    let (shape, y) = outputs["y"].try_extract_tensor::<f32>().unwrap();
    assert_eq!(&**shape, &[1, 2]);
    // x W = [1 + 4 - 9, -1 + 1 + 3] = [-4, 3]; + b = [-3.75, -7]; relu -> [0, 0]
    assert_eq!(y, &[0.0, 0.0]);
    drop(outputs);
    let x = Tensor::from_array(([1usize, 3], vec![3.0f32, 1.0, 0.0])).unwrap();
    let outputs = session.run(ort::inputs!["x" => x]).unwrap();
    let (_, y) = outputs["y"].try_extract_tensor::<f32>().unwrap();
    // x W = [3 + 2, -3 + 0.5] = [5, -2.5]; + b = [5.25, -12.5]; relu -> [5.25, 0]
    assert_eq!(y, &[5.25, 0.0]);
}
