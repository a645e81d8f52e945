//! The pieces of ONNX Runtime's C API that `ort` does not wrap and the workspace needs.

use std::ffi::CStr;

use ort::sys::OrtStatusPtr;

/// `Ok` for a null status; otherwise the status's message, releasing the status.
pub fn check_status(status: OrtStatusPtr) -> Result<(), String> {
    if status.0.is_null() {
        return Ok(());
    }
    let api = ort::api();
    // SAFETY: a non-null status is a valid OrtStatus until released, and its message is a
    // NUL-terminated string owned by it.
    let message = unsafe { CStr::from_ptr((api.GetErrorMessage)(status.0)) }
        .to_string_lossy()
        .into_owned();
    // SAFETY: released exactly once, after the message was copied.
    unsafe { (api.ReleaseStatus)(status.0) };
    Err(message)
}

/// Names of the execution providers the loaded library was built with. Call after
/// [`crate::load`].
pub fn available_providers() -> Result<Vec<String>, String> {
    let api = ort::api();
    let mut list: *mut *mut std::ffi::c_char = std::ptr::null_mut();
    let mut count: std::ffi::c_int = 0;
    // SAFETY: the out-pointers are valid; the list is released below with its own length.
    let status = unsafe { (api.GetAvailableProviders)(&mut list, &mut count) };
    check_status(status)?;
    let names = (0..count.max(0) as usize)
        .map(|i| {
            // SAFETY: ONNX Runtime returned `count` valid NUL-terminated strings.
            unsafe { CStr::from_ptr(*list.add(i)) }
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    // SAFETY: releasing exactly what GetAvailableProviders returned.
    let status = unsafe { (api.ReleaseAvailableProviders)(list, count) };
    check_status(status)?;
    Ok(names)
}
