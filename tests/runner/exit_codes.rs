//! Exit codes (README "Exit codes"): 0 when every selected case passed, 101 when one failed,
//! 2 for usage errors (a bad flag, a broken manifest or router config naming the file and
//! the problem, `HEALTH_TIMEOUT=abc`), 3 when the stack cannot be started (a program that
//! does not exist, a service that exits at start), 130 on SIGINT while a case runs. Usage
//! errors must be found before anything is started.

use crate::scenarios;
use crate::util::{FAILING_SAYS, PASSING, PASSING_NAMES, Scratch, case};

#[test]
fn passing_cases_exit_0() {
    let run = scenarios::passing();
    run.out.assert_code(0).assert_stdout_has("test result: ok. 3 passed");
    // Not vacuous: the three cases ran, against a stack this run started.
    for name in PASSING_NAMES {
        assert_eq!(case(run.summary(), name)["status"], "passed", "{}", run.out.show());
    }
    assert!(run.router_started, "the router was never started\n{}", run.out.show());
}

#[test]
fn a_failing_case_exits_101() {
    let run = scenarios::failing();
    run.out
        .assert_code(101)
        .assert_stdout_has("test result: FAILED. 3 passed; 1 failed")
        .assert_stdout_has(FAILING_SAYS);
}

#[test]
fn an_unknown_flag_exits_2() {
    let s = Scratch::new("exit-2-flag");
    s.stack("sim-router.toml");
    let out = s.gauntlet().args(&["--no-such-flag", "smoke::"]).run();
    out.assert_code(2)
        .assert_stderr_has("unexpected argument '--no-such-flag'");
    assert!(
        s.started("router").is_none(),
        "a bad flag started the stack\n{}",
        out.show()
    );
}

#[test]
fn a_manifest_naming_an_undefined_service_exits_2_naming_file_and_problem() {
    let s = Scratch::new("exit-2-depends");
    let manifest = s.stack("broken-depends.toml");
    let out = s.gauntlet().args(&["smoke::"]).run();
    out.assert_code(2)
        .assert_stderr_has(&format!("{}: ", manifest.display()))
        .assert_stderr_has("service 'router' depends on 'nosuchservice', which is not defined");
    assert!(s.started("router").is_none(), "{}", out.show());
}

#[test]
fn a_manifest_with_a_misspelt_field_exits_2_naming_file_line_and_field() {
    let s = Scratch::new("exit-2-field");
    let manifest = s.stack("broken-field.toml");
    let out = s.gauntlet().args(&["smoke::"]).run();
    out.assert_code(2)
        .assert_stderr_has(&format!("{}: invalid manifest", manifest.display()))
        .assert_stderr_has("line 8")
        .assert_stderr_has("unknown field `comand`");
    assert!(s.started("router").is_none(), "{}", out.show());
}

#[test]
fn a_broken_router_config_exits_2_naming_file_and_line() {
    let s = Scratch::new("exit-2-router-config");
    s.stack("broken-router-config.toml");
    let out = s.gauntlet().args(&["smoke::"]).run();
    out.assert_code(2)
        .assert_stderr_has(&format!("{}:3: ", s.path("router-no-id.yaml").display()))
        .assert_stderr_has("has no model_info.id");
    assert!(s.started("router").is_none(), "{}", out.show());
}

#[test]
fn health_timeout_that_is_not_a_number_exits_2_before_starting_anything() {
    let s = Scratch::new("exit-2-health-timeout");
    s.stack("sim-router.toml");
    let out = s.gauntlet().args(PASSING).env("HEALTH_TIMEOUT", "abc").run();
    out.assert_code(2).assert_stderr_has("HEALTH_TIMEOUT=\"abc\"");
    assert!(
        s.started("router").is_none(),
        "HEALTH_TIMEOUT=abc still started the router\n{}",
        out.show()
    );
}

#[test]
fn a_program_that_does_not_exist_exits_3_naming_the_service_and_what_to_do() {
    let s = Scratch::new("exit-3-missing");
    s.stack("missing-program.toml");
    let out = s.gauntlet().args(PASSING).run();
    out.assert_code(3)
        .assert_stderr_has("service 'router' needs 'gauntlet-fixture-no-such-program', which is not on PATH")
        .assert_stderr_has("install it or fix the command in the stack manifest");
}

#[test]
fn redis_server_missing_exits_3_saying_how_to_install_it() {
    let s = Scratch::new("exit-3-redis");
    s.stack("missing-redis.toml");
    let out = s.gauntlet().args(PASSING).run();
    out.assert_code(3)
        .assert_stderr_has("service 'redis' needs 'redis-server', which is not on PATH")
        .assert_stderr_has("apt-get install -y redis-server");
    assert!(
        s.started("router").is_none(),
        "the router started without its redis\n{}",
        out.show()
    );
}

#[test]
fn a_service_that_exits_at_start_exits_3_with_its_log_tail() {
    let s = Scratch::new("exit-3-dies");
    s.stack("dies-at-start.toml");
    let out = s.gauntlet().args(PASSING).run();
    out.assert_code(3)
        .assert_stderr_has("service 'router' exited during start-up (exit status 7)")
        .assert_stderr_has(&format!("router {} is giving up", s.token()))
        .assert_stderr_has("no config, exiting");
}

#[test]
fn sigint_while_a_case_runs_exits_130() {
    let run = scenarios::interrupted();
    run.out.assert_code(130).assert_stderr_has("SIGINT: stopping the stack");
}
