import confab.aggregate as agg
from confab.eventlog import WrongExpectedVersion
import test_identity_service as t

async def test_probe(backends, fresh_database_url, identity, call, monkeypatch):
    counts = {"wrong": 0, "ok": 0}
    real = agg.append
    async def counting(*a, **k):
        try:
            r = await real(*a, **k)
            counts["ok"] += 1
            return r
        except WrongExpectedVersion:
            counts["wrong"] += 1
            raise
    monkeypatch.setattr(agg, "append", counting)
    await t.test_concurrent_upserts_of_one_new_external_id_make_one_user(backends, fresh_database_url, identity, call)
    print("COUNTS", counts)
