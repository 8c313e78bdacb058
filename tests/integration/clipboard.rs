//! The clipboard bridge's plan and doctor lines (S8) for each switch: a tool, a display
//! variable, `clipboard.images`. The bridge end to end, in a real guest, is in the VM tests.

use ccvm_test_support::world::{World, plan_run_dir, plan_steps};

/// The plan for each switch (S2.2, S8.3, S10.4): with `xclip` and `DISPLAY` the responder,
/// the one forward and sshd's permit for it; `clipboard.images = false`,
/// `CCVM_CLIPBOARD_IMAGES=0`, no display or no tool: none of them, ssh clears every forward.
#[test]
fn plan_has_the_bridge_only_with_a_tool_a_display_and_images_on() {
    let world = World::new();
    let fake = world.path("bin/xclip");
    std::fs::write(&fake, "#!/bin/sh\nexit 1\n").expect("write");
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let plan = |display: bool, extra: &[(&str, &str)]| {
        let mut ccvm = world.ccvm().arg("--ccvm-plan");
        if display {
            ccvm = ccvm.env("DISPLAY", ":5837");
        }
        for (key, value) in extra {
            ccvm = ccvm.env(key, *value);
        }
        ccvm.run().expect_code(0).json()
    };
    let bridge = |plan: &serde_json::Value| -> Option<(String, String)> {
        let services = plan["host_services"].as_array().expect("host_services");
        let ssh = plan["ssh"]["args"].as_array().expect("ssh args");
        let forward = ssh
            .iter()
            .filter_map(|a| {
                a.as_str()?
                    .strip_prefix("RemoteForward=")
                    .map(str::to_owned)
            })
            .collect::<Vec<_>>();
        let permits: Vec<&serde_json::Value> = plan_steps(plan)
            .as_array()
            .expect("setup_steps")
            .iter()
            .filter(|s| s["step"] == "sshd-permit-listen")
            .collect();
        if services.is_empty() {
            assert!(forward.is_empty() && permits.is_empty(), "{plan:#}");
            assert_eq!(
                plan["session"]["service_env"],
                serde_json::json!({}),
                "no tool, no display variables"
            );
            assert!(
                ssh.iter().any(|a| a == "ClearAllForwardings=yes"),
                "{ssh:?}"
            );
            return None;
        }
        assert_eq!(services.len(), 1, "{services:?}");
        assert_eq!(forward.len(), 1, "{ssh:?}");
        assert!(
            ssh.iter().any(|a| a == "ExitOnForwardFailure=yes"),
            "{ssh:?}"
        );
        assert_eq!(permits.len(), 1, "{permits:?}");
        assert_eq!(permits[0]["listen"], "127.0.0.1:39721");
        let service = &services[0]["kind"];
        assert_eq!(service["kind"], "clipboard-images");
        let socket = service["socket"].as_str().expect("socket");
        assert_eq!(forward[0], format!("127.0.0.1:39721 {socket}"));
        Some((
            socket.to_owned(),
            service["tool"].as_str().expect("tool").to_owned(),
        ))
    };

    let on = plan(true, &[]);
    let (socket, tool) = bridge(&on).expect("the bridge is planned");
    let run_dir = plan_run_dir(&on);
    assert_eq!(socket, format!("{run_dir}/clipboard.sock"));
    assert_eq!(tool, fake.to_str().expect("utf-8"));
    // The display's value is no plugin's business: only the launcher's environment for the
    // tool holds it.
    assert_eq!(on["session"]["service_env"]["DISPLAY"], ":5837", "{on:#}");
    let mut without = on.clone();
    without["session"]["service_env"] = serde_json::Value::Null;
    let json = without.to_string();
    assert!(!json.contains(":5837"), "{json}");

    assert_eq!(bridge(&plan(true, &[("CCVM_CLIPBOARD_IMAGES", "0")])), None);
    assert_eq!(bridge(&plan(false, &[])), None, "no display, no bridge");
    let bin = world.path("bin");
    let no_tool = [("PATH", bin.to_str().expect("utf-8"))];
    std::fs::remove_file(&fake).expect("rm");
    assert_eq!(bridge(&plan(true, &no_tool)), None, "no tool, no bridge");
    std::fs::write(&fake, "#!/bin/sh\nexit 1\n").expect("write");
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    world.config("[clipboard]\nimages = false\n");
    assert_eq!(bridge(&plan(true, &[])), None);
}

/// `--ccvm-doctor` names the tool the bridge uses, or why paste will not work.
#[test]
fn doctor_reports_the_clipboard_tool_or_why_paste_will_not_work() {
    let world = World::new();
    let fake = world.path("bin/xclip");
    std::fs::write(&fake, "#!/bin/sh\nexit 1\n").expect("write");
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let line = |ccvm: ccvm_test_support::world::Ccvm| {
        let out = ccvm.arg("--ccvm-doctor").run();
        out.stdout
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some("clipboard"))
            .unwrap_or_else(|| panic!("no clipboard line:\n{}", out.stdout))
            .to_owned()
    };
    let on = line(world.ccvm().env("DISPLAY", ":5837"));
    assert!(
        on.starts_with("ok") && on.contains(fake.to_str().expect("utf-8")),
        "{on}"
    );
    assert!(on.contains("DISPLAY"), "{on}");
    let no_display = line(world.ccvm());
    assert!(
        no_display.starts_with("warn") && no_display.contains("needs DISPLAY"),
        "{no_display}"
    );
    let bin = world.path("bin");
    std::fs::remove_file(&fake).expect("rm");
    let no_tool = line(
        world
            .ccvm()
            .env("DISPLAY", ":5837")
            .env("PATH", bin.to_str().expect("utf-8")),
    );
    assert!(
        no_tool.starts_with("warn") && no_tool.contains("package xclip"),
        "{no_tool}"
    );
    let off = line(world.ccvm().env("CCVM_CLIPBOARD_IMAGES", "0"));
    assert!(off.starts_with("ok") && off.contains("off"), "{off}");
}
