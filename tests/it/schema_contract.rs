//! The published contract: `schema.graphql` is what the code serves.

#[test]
fn schema_graphql_is_up_to_date() {
    let checked_in =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql"))
            .unwrap_or_default();
    let current = ssm_session_gateway::graphql::sdl();
    assert!(
        checked_in == current,
        "schema.graphql is stale: regenerate it with `cargo run -- schema > schema.graphql` \
         and review the diff (it is the public contract)"
    );
}
