import dagster as dg

from pipeline.definitions import build_defs

defs = build_defs()  # the default cadence


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


def test_the_code_location_reads_its_cadence_when_it_loads_not_at_import(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from pipeline import definitions

    monkeypatch.setenv("FRESHCONTEXT_RECONCILE_CRON", "7 * * * *")
    monkeypatch.setenv("FRESHCONTEXT_SENSOR_INTERVAL_S", "11")
    loaded = definitions.defs()  # what `dagster dev` calls; the module was imported long before
    dg.Definitions.validate_loadable(loaded)
    assert loaded.get_schedule_def("reconcile_schedule").cron_schedule == "7 * * * *"
    assert loaded.get_sensor_def("company_change_sensor").minimum_interval_seconds == 11
    assert defs.get_schedule_def("reconcile_schedule").cron_schedule == "0 * * * *"  # built without the environment
