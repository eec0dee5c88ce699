fn main() {
    println!("cargo:rerun-if-changed=proto");
    // protoc comes from a crate, so building needs no system package.
    let protoc = protoc_bin_vendored::protoc_bin_path().expect("vendored protoc");
    std::env::set_var("PROTOC", protoc);
    tonic_prost_build::configure()
        .compile_protos(&["proto/boxlite/v1/guest.proto", "proto/boxlite/v1/shim.proto"], &["proto"])
        .expect("compile the protos");
}
