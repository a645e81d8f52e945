//! A small builder for static-shape ONNX graphs (opset 17, IR version 8) on top of the
//! generated `onnx-protobuf` messages.
//!
//! Weights become initializers with `raw_data` (little-endian). With float16 weights the
//! initializer is stored as float16 and a `Cast` to float32 follows it, so every computation
//! stays float32 and only the stored weights are rounded. Int8 layers are written in ONNX's
//! QDQ form (`QuantizeLinear` / `DequantizeLinear` around float operators), which ONNX
//! Runtime fuses into its integer kernels and any other runtime can still execute.

use std::collections::BTreeMap;

use onnx_protobuf::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto, attribute_proto::AttributeType,
    tensor_proto::DataType, tensor_shape_proto, type_proto,
};
use protobuf::Message;

use crate::quantize::{ActivationQuant, WeightQuant};

pub const OPSET: i64 = 17;
pub const IR_VERSION: i64 = 8;

/// How weights are stored in the graph files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    Float32,
    /// Weights rounded to float16 (round to nearest even), cast back to float32 in the graph.
    Float16,
    /// The convolutions and hidden dense layers in int8 (QDQ form, calibrated activation
    /// ranges); every other weight float32.
    Int8,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::Float32 => "float32",
            Precision::Float16 => "float16",
            Precision::Int8 => "int8",
        }
    }
}

/// Element type of a graph input or output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElemType {
    Float32,
    Uint8,
}

impl ElemType {
    fn onnx(self) -> DataType {
        match self {
            ElemType::Float32 => DataType::FLOAT,
            ElemType::Uint8 => DataType::UINT8,
        }
    }
}

/// A graph input or output as declared: name, element type, static shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Port {
    pub name: String,
    pub elem: ElemType,
    pub shape: Vec<i64>,
}

pub struct GraphBuilder {
    name: String,
    precision: Precision,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    /// Initializer name -> name of its float32 value in the graph (the Cast output in float16).
    weights: BTreeMap<String, String>,
    inputs: Vec<Port>,
    outputs: Vec<Port>,
    /// Value name -> the graph output name it was renamed to by [`GraphBuilder::output`].
    renamed: BTreeMap<String, String>,
    /// `DequantizeLinear` outputs of activations -> their scale (what a quantized layer fed
    /// by one needs for its bias).
    dequantized: BTreeMap<String, f32>,
    /// Extra outputs of unknown shape (calibration probes).
    probes: Vec<String>,
    next_id: usize,
}

impl GraphBuilder {
    pub fn new(name: &str, precision: Precision) -> Self {
        GraphBuilder {
            name: name.to_string(),
            precision,
            nodes: Vec::new(),
            initializers: Vec::new(),
            weights: BTreeMap::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            renamed: BTreeMap::new(),
            dequantized: BTreeMap::new(),
            probes: Vec::new(),
            next_id: 0,
        }
    }

    pub fn inputs(&self) -> &[Port] {
        &self.inputs
    }

    pub fn outputs(&self) -> &[Port] {
        &self.outputs
    }

    /// Declares a graph input and returns its value name.
    pub fn input(&mut self, name: &str, elem: ElemType, shape: &[i64]) -> String {
        self.inputs.push(Port {
            name: name.to_string(),
            elem,
            shape: shape.to_vec(),
        });
        name.to_string()
    }

    /// Declares `value` as the graph output `name`. The node producing `value` is made to
    /// write `name` directly (later uses of `value` follow the rename): an `Identity` per
    /// output costs a few microseconds a run in ONNX Runtime. An `Identity` remains only where
    /// no node of its own produces the value: a graph input, a weight, or a value that is
    /// already an output under another name.
    pub fn output(&mut self, value: &str, name: &str, shape: &[i64]) {
        let producer = self
            .nodes
            .iter()
            .position(|n| n.output.iter().any(|o| o == value));
        let is_weight = self.weights.values().any(|w| w == value);
        let is_output =
            self.renamed.contains_key(value) || self.outputs.iter().any(|p| p.name == value);
        match producer {
            Some(first) if !is_weight && !is_output => {
                for node in &mut self.nodes[first..] {
                    for v in node.input.iter_mut().chain(node.output.iter_mut()) {
                        if v == value {
                            *v = name.to_string();
                        }
                    }
                }
                self.renamed.insert(value.to_string(), name.to_string());
            }
            _ => self.node("Identity", &[value], &[name], Vec::new()),
        }
        self.outputs.push(Port {
            name: name.to_string(),
            elem: ElemType::Float32,
            shape: shape.to_vec(),
        });
    }

    /// The name `value` has in the graph now (after output renames).
    fn resolve<'a>(&'a self, value: &'a str) -> &'a str {
        self.renamed.get(value).map_or(value, String::as_str)
    }

    /// A float32 weight tensor stored under `name` (the checkpoint's tensor name). Adding the
    /// same name twice reuses the first initializer.
    pub fn weight(&mut self, name: &str, shape: &[usize], data: &[f32]) -> String {
        if let Some(value) = self.weights.get(name) {
            return value.clone();
        }
        let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        let value = match self.precision {
            // Int8 bundles keep float32 where a weight is not quantized.
            Precision::Float32 | Precision::Int8 => {
                self.initializers
                    .push(raw_tensor(name, DataType::FLOAT, &dims, &f32_bytes(data)));
                name.to_string()
            }
            Precision::Float16 => {
                let bytes: Vec<u8> = data
                    .iter()
                    .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
                    .collect();
                self.initializers
                    .push(raw_tensor(name, DataType::FLOAT16, &dims, &bytes));
                let cast = format!("{name}.f32");
                self.node(
                    "Cast",
                    &[name],
                    &[&cast],
                    vec![int_attr("to", DataType::FLOAT as i64)],
                );
                cast
            }
        };
        self.weights.insert(name.to_string(), value.clone());
        value
    }

    /// A float32 scalar constant (always float32, also with float16 weights).
    pub fn scalar(&mut self, value: f32) -> String {
        let name = self.fresh("const");
        self.initializers.push(raw_tensor(
            &name,
            DataType::FLOAT,
            &[],
            &value.to_le_bytes(),
        ));
        name
    }

    /// A constant int64 vector (split sizes, reduction axes).
    pub fn ints(&mut self, values: &[i64]) -> String {
        let name = self.fresh("ints");
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializers.push(raw_tensor(
            &name,
            DataType::INT64,
            &[values.len() as i64],
            &bytes,
        ));
        name
    }

    /// Adds a node with one fresh output and returns that output's name.
    pub fn op(&mut self, op_type: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> String {
        let out = self.fresh(op_type);
        self.node(op_type, inputs, &[&out], attrs);
        out
    }

    fn node(
        &mut self,
        op_type: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: Vec<AttributeProto>,
    ) {
        let mut node = NodeProto::new();
        node.op_type = op_type.to_string();
        node.name = format!("{}_{}", op_type, self.nodes.len());
        node.input = inputs.iter().map(|s| self.resolve(s).to_string()).collect();
        node.output = outputs.iter().map(|s| s.to_string()).collect();
        node.attribute = attrs;
        self.nodes.push(node);
    }

    fn fresh(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}_{}", self.next_id)
    }

    // ---- int8 (QDQ) -------------------------------------------------------------------

    /// An int8 weight with one scale per output channel (axis 0), dequantized in the graph:
    /// ONNX Runtime fuses the `DequantizeLinear` into the integer kernel of its consumer.
    pub fn int8_weight(&mut self, name: &str, shape: &[usize], q: &WeightQuant) -> String {
        let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        let bytes: Vec<u8> = q.values.iter().map(|&v| v as u8).collect();
        let values = format!("{name}.int8");
        self.initializers
            .push(raw_tensor(&values, DataType::INT8, &dims, &bytes));
        let channels = [q.scales.len() as i64];
        let scale = format!("{name}.scale");
        self.initializers.push(raw_tensor(
            &scale,
            DataType::FLOAT,
            &channels,
            &f32_bytes(&q.scales),
        ));
        let zero = format!("{name}.zero_point");
        self.initializers.push(raw_tensor(
            &zero,
            DataType::INT8,
            &channels,
            &vec![0u8; q.scales.len()],
        ));
        self.op(
            "DequantizeLinear",
            &[&values, &scale, &zero],
            vec![int_attr("axis", 0)],
        )
    }

    /// An int32 bias on per-channel scales, dequantized in the graph.
    pub fn int32_bias(&mut self, name: &str, values: &[i32], scales: &[f32]) -> String {
        let channels = [values.len() as i64];
        let data = format!("{name}.int32");
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializers
            .push(raw_tensor(&data, DataType::INT32, &channels, &bytes));
        let scale = format!("{name}.scale");
        self.initializers.push(raw_tensor(
            &scale,
            DataType::FLOAT,
            &channels,
            &f32_bytes(scales),
        ));
        let zero = format!("{name}.zero_point");
        self.initializers.push(raw_tensor(
            &zero,
            DataType::INT32,
            &channels,
            &vec![0u8; 4 * values.len()],
        ));
        self.op(
            "DequantizeLinear",
            &[&data, &scale, &zero],
            vec![int_attr("axis", 0)],
        )
    }

    /// `x` through uint8 and back (`QuantizeLinear`, `DequantizeLinear`): where an int8
    /// consumer reads a float activation.
    pub fn quantize_activation(&mut self, x: &str, q: ActivationQuant) -> String {
        let (scale, zero) = self.activation_params(q);
        let quantized = self.op("QuantizeLinear", &[x, &scale, &zero], Vec::new());
        self.dequantize_activation(&quantized, q)
    }

    /// A uint8 value (a quantized activation or the raw pixels) as float, `(x - zero) * scale`.
    pub fn dequantize_activation(&mut self, x: &str, q: ActivationQuant) -> String {
        let (scale, zero) = self.activation_params(q);
        let out = self.op("DequantizeLinear", &[x, &scale, &zero], Vec::new());
        self.dequantized.insert(out.clone(), q.scale);
        out
    }

    fn activation_params(&mut self, q: ActivationQuant) -> (String, String) {
        let scale = self.scalar(q.scale);
        let zero = self.fresh("zero_point");
        self.initializers
            .push(raw_tensor(&zero, DataType::UINT8, &[], &[q.zero_point]));
        (scale, zero)
    }

    /// The scale of `x` if it is a dequantized activation.
    pub fn activation_scale(&self, x: &str) -> Option<f32> {
        self.dequantized.get(x).copied()
    }

    /// Makes `x` an extra output `name` of unknown shape (a calibration probe).
    pub fn probe(&mut self, x: &str, name: &str) {
        self.node("Identity", &[x], &[name], Vec::new());
        self.probes.push(name.to_string());
    }

    /// The probe outputs, in the order they were added.
    pub fn probes(&self) -> &[String] {
        &self.probes
    }

    // ---- operators -------------------------------------------------------------------

    /// `x W^T + b` with `W` in torch layout `[out, in]`. x: [B, in] -> [B, out].
    pub fn gemm(&mut self, x: &str, w: &str, b: &str) -> String {
        self.op("Gemm", &[x, w, b], vec![int_attr("transB", 1)])
    }

    pub fn unary(&mut self, op_type: &str, x: &str) -> String {
        self.op(op_type, &[x], Vec::new())
    }

    pub fn binary(&mut self, op_type: &str, a: &str, b: &str) -> String {
        self.op(op_type, &[a, b], Vec::new())
    }

    /// ELU with alpha 1.
    pub fn elu(&mut self, x: &str) -> String {
        self.op("Elu", &[x], vec![float_attr("alpha", 1.0)])
    }

    /// `log(1 + exp(x))` as `relu(x) + Softplus(-|x|)`: exact for every x, and the
    /// `Softplus` op only ever sees values <= 0, where no backend's `exp` can overflow.
    pub fn softplus(&mut self, x: &str) -> String {
        let relu = self.unary("Relu", x);
        let abs = self.unary("Abs", x);
        let neg = self.unary("Neg", &abs);
        let tail = self.unary("Softplus", &neg);
        self.binary("Add", &relu, &tail)
    }

    /// `sign(x) ln(1 + |x|)`, elementwise (ONNX has no log1p: `Log(1 + Abs(x))`, whose
    /// absolute error near 0 is float32's rounding of 1 + |x|, about 6e-8).
    pub fn symlog(&mut self, x: &str) -> String {
        let abs = self.unary("Abs", x);
        let one = self.scalar(1.0);
        let shifted = self.binary("Add", &abs, &one);
        let log = self.unary("Log", &shifted);
        let sign = self.unary("Sign", x);
        self.binary("Mul", &sign, &log)
    }

    /// Concatenation along axis 1.
    pub fn concat(&mut self, parts: &[&str]) -> String {
        self.op("Concat", parts, vec![int_attr("axis", 1)])
    }

    /// Splits along axis 1 into pieces of the given widths.
    pub fn split(&mut self, x: &str, widths: &[i64]) -> Vec<String> {
        let sizes = self.ints(widths);
        let outs: Vec<String> = widths.iter().map(|_| self.fresh("Split")).collect();
        let out_refs: Vec<&str> = outs.iter().map(String::as_str).collect();
        self.node("Split", &[x, &sizes], &out_refs, vec![int_attr("axis", 1)]);
        outs
    }

    /// 2-D convolution, no padding. x: [B, Cin, H, W] -> [B, Cout, H', W'].
    pub fn conv(&mut self, x: &str, w: &str, b: &str, kernel: i64, stride: i64) -> String {
        self.op(
            "Conv",
            &[x, w, b],
            vec![
                ints_attr("kernel_shape", &[kernel, kernel]),
                ints_attr("strides", &[stride, stride]),
                ints_attr("pads", &[0, 0, 0, 0]),
                ints_attr("dilations", &[1, 1]),
                int_attr("group", 1),
            ],
        )
    }

    pub fn cast_to_f32(&mut self, x: &str) -> String {
        self.op("Cast", &[x], vec![int_attr("to", DataType::FLOAT as i64)])
    }

    pub fn transpose(&mut self, x: &str, perm: &[i64]) -> String {
        self.op("Transpose", &[x], vec![ints_attr("perm", perm)])
    }

    /// [B, ...] -> [B, prod(...)] in row-major order.
    pub fn flatten(&mut self, x: &str) -> String {
        self.op("Flatten", &[x], vec![int_attr("axis", 1)])
    }

    /// A new axis of size 1 at `axis`.
    pub fn unsqueeze(&mut self, x: &str, axis: i64) -> String {
        let axes = self.ints(&[axis]);
        self.op("Unsqueeze", &[x, &axes], Vec::new())
    }

    /// Drops the axis `axis` (of size 1).
    pub fn squeeze(&mut self, x: &str, axis: i64) -> String {
        let axes = self.ints(&[axis]);
        self.op("Squeeze", &[x, &axes], Vec::new())
    }

    /// One step of ONNX's `GRU` with `linear_before_reset = 1` (the gate form of torch's
    /// `GRUCell`), returning only the final hidden state. x: [1, B, I], h: [1, B, D];
    /// w: [1, 3D, I], r: [1, 3D, D] (gate blocks z | r | h), b: [1, 6D] -> [1, B, D].
    pub fn gru(&mut self, x: &str, w: &str, r: &str, b: &str, h: &str, hidden: i64) -> String {
        let out = self.fresh("GRU");
        // Inputs: X, W, R, B, sequence_lens (none), initial_h. Outputs: Y (none), Y_h.
        self.node(
            "GRU",
            &[x, w, r, b, "", h],
            &["", &out],
            vec![
                int_attr("hidden_size", hidden),
                int_attr("linear_before_reset", 1),
            ],
        );
        out
    }

    /// `x` in the shape `shape` (a 0 keeps that dim of `x`, so the batch stays as it is).
    pub fn reshape(&mut self, x: &str, shape: &[i64]) -> String {
        let shape = self.ints(shape);
        self.op("Reshape", &[x, &shape], Vec::new())
    }

    /// Softmax over the last axis.
    pub fn softmax_last(&mut self, x: &str) -> String {
        self.op("Softmax", &[x], vec![int_attr("axis", -1)])
    }

    /// `min(max(x, lo), hi)`, elementwise.
    pub fn clip(&mut self, x: &str, lo: f32, hi: f32) -> String {
        let lo = self.scalar(lo);
        let hi = self.scalar(hi);
        self.op("Clip", &[x, &lo, &hi], Vec::new())
    }

    /// The one-hot of the largest entry along the last axis (the first of equal ones), as
    /// float32 in the shape of `x`. [.., K] -> [.., K].
    pub fn one_hot_of_max(&mut self, x: &str, classes: i64) -> String {
        let index = self.op(
            "ArgMax",
            &[x],
            vec![int_attr("axis", -1), int_attr("keepdims", 1)],
        );
        let range: Vec<i64> = (0..classes).collect();
        let range = self.ints(&range);
        let hit = self.binary("Equal", &index, &range);
        self.cast_to_f32(&hit)
    }

    /// Sum over axis 1, dropping it. [B, N] -> [B].
    pub fn sum_axis1(&mut self, x: &str) -> String {
        let axes = self.ints(&[1]);
        self.op("ReduceSum", &[x, &axes], vec![int_attr("keepdims", 0)])
    }

    // ---- serialisation ---------------------------------------------------------------

    /// The complete model as protobuf bytes.
    pub fn to_bytes(&self, doc: &str) -> Result<Vec<u8>, protobuf::Error> {
        let mut graph = GraphProto::new();
        graph.name = self.name.clone();
        graph.node = self.nodes.clone();
        graph.initializer = self.initializers.clone();
        graph.input = self.inputs.iter().map(value_info).collect();
        graph.output = self.outputs.iter().map(value_info).collect();
        graph.output.extend(self.probes.iter().map(|name| {
            let mut tensor = type_proto::Tensor::new();
            tensor.elem_type = DataType::FLOAT as i32;
            let mut ty = TypeProto::new();
            ty.value = Some(type_proto::Value::TensorType(tensor));
            let mut info = ValueInfoProto::new();
            info.name = name.clone();
            info.type_ = protobuf::MessageField::some(ty);
            info
        }));

        let mut opset = OperatorSetIdProto::new();
        opset.domain = String::new();
        opset.version = OPSET;

        let mut model = ModelProto::new();
        model.ir_version = IR_VERSION;
        model.opset_import = vec![opset];
        model.producer_name = "dreamer-export".to_string();
        model.producer_version = env!("CARGO_PKG_VERSION").to_string();
        model.doc_string = doc.to_string();
        model.graph = protobuf::MessageField::some(graph);
        model.write_to_bytes()
    }
}

fn value_info(port: &Port) -> ValueInfoProto {
    let mut shape = TensorShapeProto::new();
    shape.dim = port
        .shape
        .iter()
        .map(|&d| {
            let mut dim = tensor_shape_proto::Dimension::new();
            dim.value = Some(tensor_shape_proto::dimension::Value::DimValue(d));
            dim
        })
        .collect();
    let mut tensor = type_proto::Tensor::new();
    tensor.elem_type = port.elem.onnx() as i32;
    tensor.shape = protobuf::MessageField::some(shape);
    let mut ty = TypeProto::new();
    ty.value = Some(type_proto::Value::TensorType(tensor));
    let mut info = ValueInfoProto::new();
    info.name = port.name.clone();
    info.type_ = protobuf::MessageField::some(ty);
    info
}

fn raw_tensor(name: &str, dtype: DataType, dims: &[i64], raw: &[u8]) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.to_string();
    t.data_type = dtype as i32;
    t.dims = dims.to_vec();
    t.raw_data = raw.to_vec();
    t
}

fn f32_bytes(data: &[f32]) -> Vec<u8> {
    data.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn int_attr(name: &str, value: i64) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.to_string();
    a.type_ = AttributeType::INT.into();
    a.i = value;
    a
}

fn ints_attr(name: &str, values: &[i64]) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.to_string();
    a.type_ = AttributeType::INTS.into();
    a.ints = values.to_vec();
    a
}

fn float_attr(name: &str, value: f32) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.to_string();
    a.type_ = AttributeType::FLOAT.into();
    a.f = value;
    a
}
