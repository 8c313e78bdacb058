//! Example inputs for plugin unit tests (here and in third-party crates).

use std::collections::BTreeMap;

use crate::{Acceleration, HostFacts, PolicyInput, SessionInfo, ShareSpec, VmSpec};

/// A typical two-share, 4 GiB, 4-vCPU TCG spec with a run directory under `/run/user/1000`.
pub fn example_spec() -> VmSpec {
    VmSpec {
        memory_mib: 4096,
        cpus: 4,
        acceleration: Acceleration::Tcg,
        kernel: "/img/vmlinuz".to_owned(),
        initrd: "/img/initrd.img".to_owned(),
        root_image: "/img/root.img".to_owned(),
        kernel_cmdline: vec!["panic=-1".to_owned(), "quiet".to_owned()],
        shares: vec![
            ShareSpec {
                tag: "ccvm-seed".to_owned(),
                host_path: "/run/user/1000/ccvm/run-1/seed".to_owned(),
                guest_path: "/run/ccvm/seed".to_owned(),
                read_only: true,
            },
            ShareSpec {
                tag: "ccvm-project".to_owned(),
                host_path: "/home/alice/src/my,project".to_owned(),
                guest_path: "/home/alice/src/my,project".to_owned(),
                read_only: false,
            },
        ],
        share_transport: None,
        scratch_disk: None,
        guest_ssh_port: 22,
        host_ssh_port: 40022,
        vsock_cid: 3,
        hypervisor_sandbox: true,
        lock_guest_memory: false,
        run_dir: "/run/user/1000/ccvm/run-1".to_owned(),
    }
}

/// Facts of an x86_64 host where every program in `programs` was found under `/usr/bin`.
pub fn example_facts(programs: &[&str]) -> HostFacts {
    HostFacts {
        host_arch: "x86_64".to_owned(),
        uid: 1000,
        gid: 1000,
        user: "alice".to_owned(),
        home: "/home/alice".to_owned(),
        project_dir: "/home/alice/src/my,project".to_owned(),
        programs: programs
            .iter()
            .map(|p| {
                let path = if p.starts_with('/') {
                    (*p).to_owned()
                } else {
                    format!("/usr/bin/{p}")
                };
                ((*p).to_owned(), Some(path))
            })
            .collect(),
        resolved: BTreeMap::new(),
        files: BTreeMap::new(),
        git_global_config: None,
        tsc_khz: Some(2_095_076),
        user_namespaces: Some(crate::NamespaceFact::Usable),
        variables: BTreeMap::new(),
    }
}

/// A policy input with the given settings for a writable, open-network microvm session.
pub fn example_policy_input(settings: serde_json::Value) -> PolicyInput {
    PolicyInput {
        settings,
        session: SessionInfo {
            backend: "microvm".to_owned(),
            writable_cwd: true,
            persist_claude_projects: false,
            scratch_disk: false,
            guest_network: true,
            shell: false,
            guest_dns: Some("10.0.2.3".to_owned()),
            guest_gateway: Some("10.0.2.2".to_owned()),
            run_dir: Some("/run/user/1000/ccvm/run-1".to_owned()),
        },
    }
}
