import dagster as dg

from pipeline.definitions import defs


def test_code_location_loads() -> None:
    dg.Definitions.validate_loadable(defs)


def test_company_and_user_state_are_separate_lineages() -> None:
    graph = defs.resolve_asset_graph()
    company = dg.AssetKey("company_chunk_index")
    user = dg.AssetKey("user_state_index")
    assert graph.get(company).parent_keys == {dg.AssetKey("company_documents")}
    assert graph.get(user).parent_keys == {dg.AssetKey("user_snapshots")}
    assert graph.get(company).code_version and graph.get(company).code_version == graph.get(user).code_version
    checks = {(k.asset_key.path[-1], k.name) for k in graph.asset_check_keys}
    assert {("company_chunk_index", "index_matches_store"), ("user_state_index", "index_matches_store")} <= checks
