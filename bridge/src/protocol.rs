//! The frames between the bridge and a worker (docs/bridge.md): u32 little-endian payload
//! length, a kind byte, the payload. Everything a worker sends is checked here; nothing it
//! sends can panic the bridge.

use dreamer_tasks::{EnvOptions, FRAME_BYTES, FRAME_SIZE, Observation, Step};
use serde_json::{Map, Value, json};

use crate::error::Fault;

pub(crate) const PROTOCOL_VERSION: u32 = 1;
/// Length (u32) and kind (u8).
pub(crate) const HEADER_BYTES: usize = 5;
/// Largest payload either side accepts (64 MiB).
pub(crate) const MAX_PAYLOAD: usize = 1 << 26;
/// Reward (f64), terminated (u8), truncated (u8) before a transition's observation.
const STEP_HEAD_BYTES: usize = 10;

/// Frame kinds: requests from the bridge, replies from a worker.
pub(crate) mod kind {
    pub const HELLO: u8 = b'H';
    pub const RESET: u8 = b'R';
    pub const STEP: u8 = b'S';
    pub const SPEC: u8 = b'P';
    pub const OBSERVATION: u8 = b'O';
    pub const TRANSITION: u8 = b'T';
    pub const ERROR: u8 = b'E';
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Frame {
    pub kind: u8,
    pub payload: Vec<u8>,
}

/// Appends one frame to `out`.
pub(crate) fn encode(kind: u8, payload: &[u8], out: &mut Vec<u8>) {
    // Payloads the bridge writes are a hello (capped), a seed or an action: far below 4 GiB.
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.push(kind);
    out.extend_from_slice(payload);
}

/// Takes one complete frame off the front of `inbox`, None while it is incomplete. A reply
/// followed by more bytes is a protocol error: a worker answers each request exactly once.
pub(crate) fn take_frame(inbox: &mut Vec<u8>) -> Result<Option<Frame>, Fault> {
    if inbox.len() < HEADER_BYTES {
        return Ok(None);
    }
    let length = u32::from_le_bytes([inbox[0], inbox[1], inbox[2], inbox[3]]) as usize;
    if length > MAX_PAYLOAD {
        return Err(Fault::Protocol {
            detail: format!(
                "a frame announces {length} bytes, over the {MAX_PAYLOAD}-byte limit (is the \
                 worker writing something else to its protocol pipe?)"
            ),
        });
    }
    let end = HEADER_BYTES + length;
    if inbox.len() < end {
        return Ok(None);
    }
    if inbox.len() > end {
        return Err(Fault::Protocol {
            detail: format!(
                "{} bytes arrived after the reply; a worker sends one reply per request",
                inbox.len() - end
            ),
        });
    }
    let frame = Frame {
        kind: inbox[4],
        payload: inbox[HEADER_BYTES..end].to_vec(),
    };
    inbox.clear();
    Ok(Some(frame))
}

/// The handshake's first frame: what to build.
pub(crate) fn hello(
    task: &str,
    kwargs: &Map<String, Value>,
    options: EnvOptions,
    physics_dt: Option<f64>,
    worker: usize,
) -> Vec<u8> {
    json!({
        "protocol": PROTOCOL_VERSION,
        "task": task,
        "kwargs": kwargs,
        "obs_mode": options.obs_mode.name(),
        "action_repeat": options.action_repeat,
        "image_size": FRAME_SIZE,
        "physics_dt": physics_dt,
        "worker": worker,
    })
    .to_string()
    .into_bytes()
}

/// The payload of a reply of kind `expected`; an error frame becomes [`Fault::Raised`].
pub(crate) fn expect(frame: Frame, expected: u8) -> Result<Vec<u8>, Fault> {
    if frame.kind == expected {
        return Ok(frame.payload);
    }
    if frame.kind == kind::ERROR {
        return Err(raised(&frame.payload));
    }
    Err(Fault::Protocol {
        detail: format!(
            "reply of kind {:?}, expected {:?}",
            char::from(frame.kind),
            char::from(expected)
        ),
    })
}

/// An error frame's JSON `{"message": ..., "traceback": [...]}`; anything else is shown as text.
pub(crate) fn raised(payload: &[u8]) -> Fault {
    let parsed = serde_json::from_slice::<Value>(payload).ok();
    let message = parsed
        .as_ref()
        .and_then(|v| v.get("message"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let traceback = parsed
        .as_ref()
        .and_then(|v| v.get("traceback"))
        .and_then(Value::as_array)
        .map(|lines| {
            lines
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    Fault::Raised {
        message: message.unwrap_or_else(|| {
            format!(
                "error frame that is not the expected JSON: {}",
                String::from_utf8_lossy(&payload[..payload.len().min(500)])
            )
        }),
        traceback,
    }
}

/// What the observations of one bridge look like.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ObsShape {
    /// Names of the state components; empty when the mode does not use state.
    pub state_fields: Vec<String>,
    pub pixels: bool,
}

impl ObsShape {
    fn bytes(&self) -> usize {
        4 * self.state_fields.len() + if self.pixels { FRAME_BYTES } else { 0 }
    }
}

/// An observation payload: state f32 LE, then the 64x64x3 frame; sizes exact, state finite.
pub(crate) fn decode_observation(payload: &[u8], shape: &ObsShape) -> Result<Observation, Fault> {
    if payload.len() != shape.bytes() {
        return Err(Fault::Protocol {
            detail: format!(
                "observation of {} bytes, expected {} ({} state values x 4{})",
                payload.len(),
                shape.bytes(),
                shape.state_fields.len(),
                if shape.pixels {
                    format!(" + {FRAME_BYTES} pixel bytes")
                } else {
                    String::new()
                }
            ),
        });
    }
    let (state_bytes, pixels) = payload.split_at(4 * shape.state_fields.len());
    let state: Vec<f32> = state_bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    if let Some(index) = state.iter().position(|v| !v.is_finite()) {
        return Err(Fault::BadValue {
            detail: format!(
                "state component {index} (`{}`) is {}, expected a finite number",
                shape.state_fields[index], state[index]
            ),
        });
    }
    Ok(Observation {
        state,
        pixels: pixels.to_vec(),
    })
}

/// A transition payload: reward f64, terminated u8, truncated u8, observation.
pub(crate) fn decode_transition(payload: &[u8], shape: &ObsShape) -> Result<Step, Fault> {
    if payload.len() < STEP_HEAD_BYTES {
        return Err(Fault::Protocol {
            detail: format!(
                "transition of {} bytes, shorter than its {STEP_HEAD_BYTES}-byte head",
                payload.len()
            ),
        });
    }
    let (head, obs) = payload.split_at(STEP_HEAD_BYTES);
    let mut reward_bytes = [0u8; 8];
    reward_bytes.copy_from_slice(&head[..8]);
    let reward = f64::from_le_bytes(reward_bytes);
    if !reward.is_finite() {
        return Err(Fault::BadValue {
            detail: format!("reward is {reward}, expected a finite number"),
        });
    }
    let flag = |name: &str, byte: u8| match byte {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(Fault::Protocol {
            detail: format!("{name} flag is {other}, expected 0 or 1"),
        }),
    };
    Ok(Step {
        reward,
        terminated: flag("terminated", head[8])?,
        truncated: flag("truncated", head[9])?,
        obs: decode_observation(obs, shape)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(state: usize, pixels: bool) -> ObsShape {
        ObsShape {
            state_fields: (0..state).map(|i| format!("obs[{i}]")).collect(),
            pixels,
        }
    }

    fn transition(reward: f64, terminated: u8, truncated: u8, state: &[f32]) -> Vec<u8> {
        let mut out = reward.to_le_bytes().to_vec();
        out.extend([terminated, truncated]);
        for v in state {
            out.extend(v.to_le_bytes());
        }
        out
    }

    #[test]
    fn frames_round_trip_and_wait_for_all_bytes() {
        let mut wire = Vec::new();
        encode(kind::STEP, &[1, 2, 3], &mut wire);
        assert_eq!(wire, [3, 0, 0, 0, b'S', 1, 2, 3]);
        let mut inbox = wire[..6].to_vec();
        assert_eq!(take_frame(&mut inbox), Ok(None));
        inbox.extend(&wire[6..]);
        let frame = take_frame(&mut inbox).unwrap().unwrap();
        assert_eq!((frame.kind, frame.payload), (b'S', vec![1, 2, 3]));
        assert!(inbox.is_empty());
    }

    #[test]
    fn oversized_and_trailing_bytes_are_protocol_errors() {
        let mut inbox = vec![0xff, 0xff, 0xff, 0xff, b'T'];
        let error = take_frame(&mut inbox).unwrap_err().to_string();
        assert!(error.contains("4294967295"), "{error}");
        let mut inbox = Vec::new();
        encode(kind::OBSERVATION, &[0; 4], &mut inbox);
        inbox.extend([9, 9]);
        let error = take_frame(&mut inbox).unwrap_err().to_string();
        assert!(error.contains("2 bytes arrived after"), "{error}");
    }

    #[test]
    fn transitions_are_checked() {
        let s = shape(2, false);
        let step = decode_transition(&transition(-1.5, 0, 1, &[0.5, 2.0]), &s).unwrap();
        assert_eq!(step.reward, -1.5);
        assert!(!step.terminated && step.truncated);
        assert_eq!(step.obs.state, [0.5, 2.0]);
        assert!(step.obs.pixels.is_empty());

        let error = decode_transition(&transition(f64::NAN, 0, 0, &[0.0, 0.0]), &s).unwrap_err();
        assert!(error.to_string().contains("reward is NaN"), "{error}");
        let error = decode_transition(&transition(0.0, 0, 0, &[0.0, f32::INFINITY]), &s)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("`obs[1]`") && error.contains("inf"),
            "{error}"
        );
        let error = decode_transition(&transition(0.0, 2, 0, &[0.0, 0.0]), &s)
            .unwrap_err()
            .to_string();
        assert!(error.contains("terminated flag is 2"), "{error}");
        let error = decode_transition(&transition(0.0, 0, 0, &[0.0]), &s)
            .unwrap_err()
            .to_string();
        assert!(error.contains("4 bytes, expected 8"), "{error}");
        let error = decode_transition(&[1, 2, 3], &s).unwrap_err().to_string();
        assert!(error.contains("3 bytes"), "{error}");
    }

    #[test]
    fn observations_carry_exactly_one_frame() {
        let s = shape(1, true);
        let mut payload = 0.25f32.to_le_bytes().to_vec();
        payload.extend(vec![7u8; FRAME_BYTES]);
        let obs = decode_observation(&payload, &s).unwrap();
        assert_eq!(obs.state, [0.25]);
        assert_eq!(obs.pixels.len(), FRAME_BYTES);
        payload.pop();
        let error = decode_observation(&payload, &s).unwrap_err().to_string();
        assert!(error.contains("12288 pixel bytes"), "{error}");
    }

    #[test]
    fn error_frames_become_raised_faults() {
        let frame = Frame {
            kind: kind::ERROR,
            payload: br#"{"message": "boom", "traceback": ["File x", "RuntimeError: boom"]}"#
                .to_vec(),
        };
        let fault = expect(frame, kind::TRANSITION).unwrap_err();
        assert_eq!(
            fault,
            Fault::Raised {
                message: "boom".into(),
                traceback: vec!["File x".into(), "RuntimeError: boom".into()],
            }
        );
        let garbage = Frame {
            kind: kind::ERROR,
            payload: vec![0xff, b'x'],
        };
        let text = expect(garbage, kind::SPEC).unwrap_err().to_string();
        assert!(text.contains("not the expected JSON"), "{text}");
        let wrong = Frame {
            kind: b'Z',
            payload: vec![],
        };
        let text = expect(wrong, kind::SPEC).unwrap_err().to_string();
        assert!(text.contains("'Z'") && text.contains("'P'"), "{text}");
    }
}
