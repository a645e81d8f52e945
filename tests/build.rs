//! Lets the test binaries find libtorch without LD_LIBRARY_PATH (see trainer/build.rs).
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let Some(libtorch) = std::env::var_os("LIBTORCH").map(PathBuf::from) else {
        panic!(
            "LIBTORCH is not set: run scripts/fetch-deps (it fills .deps/, which .cargo/config.toml points at)"
        );
    };
    let libtorch = libtorch.canonicalize().unwrap_or_else(|e| {
        panic!(
            "LIBTORCH={} is not usable ({e}): run scripts/fetch-deps",
            libtorch.display()
        )
    });
    println!(
        "cargo:rustc-link-arg=-Wl,-rpath,{}",
        libtorch.join("lib").display()
    );
}
