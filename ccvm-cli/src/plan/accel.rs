//! Choosing KVM or TCG (S4).
//!
//! The host's probe ([`crate::host::probe_kvm`]) reads the device node, CPU flags and loaded
//! modules; [`kvm_problem`] and [`resolve`] are pure decisions over that probe and the
//! backend's capabilities, so every reason can be tested without the hardware. `tcg` never
//! probes KVM.

use ccvm_plugin_api::{Acceleration, Capabilities};

use crate::config::AccelMode;
use crate::error::Error;
use crate::host::{Device, KVM_DEVICE, KvmProbe};

/// `fix`, or TCG instead: the advice for a backend that can also run under TCG.
pub fn or_tcg(fix: &str) -> String {
    format!("{fix}, or use acceleration = \"tcg\"")
}

/// Why KVM cannot be used, and the fix (without the TCG alternative, which only a backend
/// that supports TCG may suggest: [`or_tcg`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvmProblem {
    pub reason: String,
    pub fix: String,
}

/// `None` when KVM is genuinely usable.
pub fn kvm_problem(probe: &KvmProbe) -> Option<KvmProblem> {
    if probe.device == Device::Missing {
        return Some(KvmProblem {
            reason: format!(
                "{KVM_DEVICE} does not exist (KVM modules not loaded or virtualization disabled)"
            ),
            fix: "load kvm_intel or kvm_amd and enable virtualization (VT-x / AMD-V) in the \
                  firmware"
                .to_owned(),
        });
    }
    if let Some(module) = &probe.software_module {
        return Some(KvmProblem {
            reason: format!(
                "{KVM_DEVICE} is provided by {module}, a software-only KVM that hangs or crashes \
                 stock guest kernels"
            ),
            fix: "run on a host whose KVM uses hardware virtualization (VT-x / AMD-V)".to_owned(),
        });
    }
    if probe.hardware_virt == Some(false) {
        return Some(KvmProblem {
            reason: "the CPU exposes no hardware virtualization (no vmx or svm flag), so KVM \
                     cannot run ordinary guests"
                .to_owned(),
            fix: "enable VT-x / AMD-V (or nested virtualization on a cloud VM)".to_owned(),
        });
    }
    if let Device::NotWritable { group } = &probe.device {
        let fix = match group {
            Some(group) if group != "root" => format!(
                "add yourself to the `{group}` group that owns {KVM_DEVICE} \
                 (`sudo usermod -aG {group} $USER`, then log in again)"
            ),
            _ => format!(
                "make {KVM_DEVICE} accessible to you (usually by installing your distribution's \
                 udev rule for the `kvm` group)"
            ),
        };
        return Some(KvmProblem {
            reason: format!("{KVM_DEVICE} is not writable by you"),
            fix,
        });
    }
    None
}

/// The decision for one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub acceleration: Acceleration,
    /// The one warning `auto` prints when it falls back to TCG.
    pub warning: Option<String>,
}

fn unsupported(message: String, hint: &str) -> Error {
    Error::Unsupported {
        message,
        hint: hint.to_owned(),
    }
}

/// Chooses the acceleration for `backend` with capabilities `caps` on a `host_arch` host.
/// `probe` is only called when KVM is a candidate (never for `tcg`).
pub fn resolve(
    mode: AccelMode,
    backend: &str,
    caps: &Capabilities,
    host_arch: &str,
    probe: impl FnOnce() -> KvmProbe,
) -> Result<Resolved, Error> {
    let supports = |a| caps.accelerations.contains(&a);
    let same_arch = caps.guest_arch == "host" || caps.guest_arch == host_arch;
    let tcg = Resolved {
        acceleration: Acceleration::Tcg,
        warning: None,
    };
    match mode {
        AccelMode::Tcg => {
            if supports(Acceleration::Tcg) {
                Ok(tcg)
            } else {
                Err(unsupported(
                    format!(
                        "backend `{backend}` cannot run with acceleration = \"tcg\": it needs KVM"
                    ),
                    "set acceleration = \"kvm\" or \"auto\", or choose a QEMU backend (--backend microvm)",
                ))
            }
        }
        AccelMode::Kvm => {
            if !supports(Acceleration::Kvm) {
                return Err(unsupported(
                    format!("backend `{backend}` does not support KVM"),
                    "set acceleration = \"tcg\" or \"auto\"",
                ));
            }
            if !same_arch {
                return Err(unsupported(
                    format!(
                        "backend `{backend}` runs an {} guest, which KVM cannot run on this {host_arch} host",
                        caps.guest_arch
                    ),
                    "set acceleration = \"tcg\" or \"auto\"",
                ));
            }
            match kvm_problem(&probe()) {
                None => Ok(Resolved {
                    acceleration: Acceleration::Kvm,
                    warning: None,
                }),
                Some(problem) => Err(Error::KvmUnusable {
                    what: "acceleration = \"kvm\" but KVM is not usable".to_owned(),
                    reason: problem.reason,
                    fix: if supports(Acceleration::Tcg) {
                        or_tcg(&problem.fix)
                    } else {
                        problem.fix
                    },
                }),
            }
        }
        AccelMode::Auto => {
            let problem: Option<KvmProblem> = if !supports(Acceleration::Kvm) {
                None
            } else if !same_arch {
                Some(KvmProblem {
                    reason: format!(
                        "the {} guest of backend `{backend}` cannot use KVM on this {host_arch} host",
                        caps.guest_arch
                    ),
                    fix: String::new(),
                })
            } else {
                match kvm_problem(&probe()) {
                    None => {
                        return Ok(Resolved {
                            acceleration: Acceleration::Kvm,
                            warning: None,
                        });
                    }
                    problem => problem,
                }
            };
            if supports(Acceleration::Tcg) {
                Ok(Resolved {
                    acceleration: Acceleration::Tcg,
                    warning: problem
                        .map(|p| format!("using TCG emulation (slow) because {}", p.reason)),
                })
            } else {
                let problem = problem.unwrap_or_else(|| KvmProblem {
                    reason: "it supports no acceleration this host offers".to_owned(),
                    fix: String::new(),
                });
                Err(Error::KvmUnusable {
                    what: format!("backend `{backend}` needs KVM, which is not usable here"),
                    reason: problem.reason,
                    fix: if problem.fix.is_empty() {
                        "choose a QEMU backend (--backend microvm), which runs without KVM"
                            .to_owned()
                    } else {
                        format!(
                            "{}; or choose a QEMU backend (--backend microvm), which runs without KVM",
                            problem.fix
                        )
                    },
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use ccvm_plugin_api::ShareTransport;

    use super::*;

    fn caps(guest_arch: &str, accelerations: &[Acceleration]) -> Capabilities {
        Capabilities {
            guest_arch: guest_arch.to_owned(),
            accelerations: accelerations.to_vec(),
            share_transports: vec![ShareTransport::NineP],
            guest_network: true,
            scratch_disk: true,
            lock_guest_memory: true,
            hypervisor_sandbox: true,
        }
    }

    fn good() -> KvmProbe {
        KvmProbe {
            device: Device::Usable,
            hardware_virt: Some(true),
            software_module: None,
        }
    }

    /// This machine: /dev/kvm opens, but it is kvm_pvm and the CPU has no vmx/svm.
    fn pvm() -> KvmProbe {
        KvmProbe {
            device: Device::Usable,
            hardware_virt: Some(false),
            software_module: Some("kvm_pvm".to_owned()),
        }
    }

    const BOTH: &[Acceleration] = &[Acceleration::Kvm, Acceleration::Tcg];

    #[test]
    fn auto_uses_kvm_when_genuinely_usable() {
        let r = resolve(
            AccelMode::Auto,
            "microvm",
            &caps("x86_64", BOTH),
            "x86_64",
            good,
        )
        .expect("ok");
        assert_eq!(
            r,
            Resolved {
                acceleration: Acceleration::Kvm,
                warning: None
            }
        );
    }

    #[test]
    fn auto_falls_back_to_tcg_on_software_kvm_with_one_named_reason() {
        let r = resolve(
            AccelMode::Auto,
            "microvm",
            &caps("x86_64", BOTH),
            "x86_64",
            pvm,
        )
        .expect("ok");
        assert_eq!(r.acceleration, Acceleration::Tcg);
        assert!(r.warning.expect("warning").contains("kvm_pvm"));
    }

    #[test]
    fn tcg_never_probes_kvm() {
        let r = resolve(
            AccelMode::Tcg,
            "microvm",
            &caps("x86_64", BOTH),
            "x86_64",
            || panic!("probed KVM under tcg"),
        )
        .expect("ok");
        assert_eq!(r.acceleration, Acceleration::Tcg);
    }

    /// Every way KVM can be unusable, with a word of its reason.
    fn unusable() -> [(KvmProbe, &'static str); 5] {
        [
            (
                KvmProbe {
                    device: Device::Missing,
                    ..good()
                },
                "does not exist",
            ),
            (pvm(), "software-only"),
            (
                KvmProbe {
                    hardware_virt: Some(false),
                    ..good()
                },
                "no vmx or svm",
            ),
            (
                KvmProbe {
                    device: Device::NotWritable {
                        group: Some("kvm".into()),
                    },
                    ..good()
                },
                "not writable",
            ),
            (
                KvmProbe {
                    device: Device::NotWritable { group: None },
                    ..good()
                },
                "not writable",
            ),
        ]
    }

    #[test]
    fn forced_kvm_explains_each_reason() {
        for (probe, reason) in unusable() {
            let error = resolve(
                AccelMode::Kvm,
                "q35",
                &caps("x86_64", BOTH),
                "x86_64",
                || probe.clone(),
            )
            .expect_err("unusable");
            assert!(error.to_string().contains(reason), "{error}");
            assert_eq!(error.exit_code(), 1);
        }
        let probe = KvmProbe {
            device: Device::NotWritable {
                group: Some("kvm".into()),
            },
            ..good()
        };
        assert!(
            kvm_problem(&probe)
                .expect("problem")
                .fix
                .contains("usermod -aG kvm")
        );
    }

    #[test]
    fn kvm_only_backend_refuses_tcg_as_config_error() {
        let error = resolve(
            AccelMode::Tcg,
            "cloud-hypervisor",
            &caps("host", &[Acceleration::Kvm]),
            "x86_64",
            good,
        )
        .expect_err("refused");
        assert_eq!(error.exit_code(), 2);
        assert!(error.to_string().contains("needs KVM"), "{error}");
    }

    /// A backend that cannot run under TCG is never told to use it, whatever KVM lacks; one
    /// that can is.
    #[test]
    fn only_a_backend_that_runs_under_tcg_is_advised_to_use_it() {
        for (probe, _) in unusable() {
            for mode in [AccelMode::Auto, AccelMode::Kvm] {
                let error = resolve(
                    mode,
                    "cloud-hypervisor",
                    &caps("host", &[Acceleration::Kvm]),
                    "x86_64",
                    || probe.clone(),
                )
                .expect_err("no usable KVM");
                let hint = error.hint().unwrap_or_default();
                assert!(!hint.contains("tcg"), "{mode:?} {probe:?}: {hint}");
            }
            let error = resolve(
                AccelMode::Kvm,
                "q35",
                &caps("x86_64", BOTH),
                "x86_64",
                || probe.clone(),
            )
            .expect_err("no usable KVM");
            let hint = error.hint().unwrap_or_default();
            assert!(hint.contains("acceleration = \"tcg\""), "{probe:?}: {hint}");
        }
    }

    #[test]
    fn kvm_only_backend_on_auto_without_kvm_fails_with_reason() {
        let error = resolve(
            AccelMode::Auto,
            "cloud-hypervisor",
            &caps("host", &[Acceleration::Kvm]),
            "x86_64",
            pvm,
        )
        .expect_err("no kvm");
        assert!(error.to_string().contains("kvm_pvm"), "{error}");
    }

    #[test]
    fn foreign_guest_arch_uses_tcg_and_cannot_force_kvm() {
        let r = resolve(
            AccelMode::Auto,
            "virt",
            &caps("aarch64", BOTH),
            "x86_64",
            || panic!("no probe"),
        )
        .expect("ok");
        assert_eq!(r.acceleration, Acceleration::Tcg);
        let error = resolve(
            AccelMode::Kvm,
            "virt",
            &caps("aarch64", BOTH),
            "x86_64",
            good,
        )
        .expect_err("arch");
        assert_eq!(error.exit_code(), 2);
    }
}
