//! Snapshot tests of the command line: every `--help`, and the error output (one clear cause,
//! a hint, the exit code) for inputs that need no token. Cases are in `tests/cmd/`; refresh
//! them with `TRYCMD=overwrite cargo test -p keyferry --test cli` and review the diff.

#[test]
fn cli_snapshots() {
    trycmd::TestCases::new()
        .env(
            "KEYFERRY_MODULE",
            "/nonexistent/keyferry-tests/libkeyferry_pkcs11.so",
        )
        .case("tests/cmd/*.toml");
}
