//! The committed code in `src/gen/` is exactly what the `.proto` files in `proto/`
//! produce. With `MOTLEY_REGEN_PROTOS=1` the test writes the files instead.

use std::path::{Path, PathBuf};

/// One generated API: its `.proto` files (relative to `proto/<dir>`) and the packages
/// they produce.
struct Api {
    dir: &'static str,
    files: &'static [&'static str],
    packages: &'static [&'static str],
}

const APIS: &[Api] = &[
    Api {
        dir: "etcd",
        files: &["rpc.proto", "kv.proto"],
        packages: &["etcdserverpb", "mvccpb"],
    },
    Api {
        dir: "containerd",
        files: &[
            "services/containers/v1/containers.proto",
            "services/content/v1/content.proto",
            "services/diff/v1/diff.proto",
            "services/images/v1/images.proto",
            "services/leases/v1/leases.proto",
            "services/snapshots/v1/snapshots.proto",
            "services/tasks/v1/tasks.proto",
            "services/version/v1/version.proto",
        ],
        packages: &[
            "containerd.services.containers.v1",
            "containerd.services.content.v1",
            "containerd.services.diff.v1",
            "containerd.services.images.v1",
            "containerd.services.leases.v1",
            "containerd.services.snapshots.v1",
            "containerd.services.tasks.v1",
            "containerd.services.version.v1",
            "containerd.types",
            "containerd.v1.types",
        ],
    },
];

fn generate(api: &Api, out: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("proto")
        .join(api.dir);
    let fds =
        protox::compile(api.files, [&root]).unwrap_or_else(|e| panic!("{}: {e}", root.display()));
    tonic_prost_build::configure()
        .build_server(false)
        .build_transport(false)
        .emit_rerun_if_changed(false)
        .out_dir(out)
        .compile_fds(fds)
        .unwrap_or_else(|e| panic!("generating {}: {e}", api.dir));
}

#[test]
fn committed_code_matches_the_proto_files() {
    let committed = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/gen");
    let regen = std::env::var_os("MOTLEY_REGEN_PROTOS").is_some();
    for api in APIS {
        let tmp = tempfile::tempdir().expect("a temporary directory");
        generate(api, tmp.path());
        for p in api.packages {
            let name = format!("{p}.rs");
            let fresh = std::fs::read_to_string(tmp.path().join(&name))
                .unwrap_or_else(|e| panic!("{name} was not generated: {e}"));
            let path = committed.join(&name);
            if regen {
                std::fs::write(&path, &fresh).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                continue;
            }
            let old = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(
                old == fresh,
                "{} is not what proto/{} produces: run MOTLEY_REGEN_PROTOS=1 cargo test -p motley-grpc --test generated",
                path.display(),
                api.dir
            );
        }
    }
}
