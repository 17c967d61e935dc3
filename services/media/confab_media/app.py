"""Wiring and start-up of the media service.

Owns the ``MEDIA`` stream, the bucket (created if missing), the temporary
``uploads`` object store and the ``media`` read model; answers the commands
(``commands``: ingests, run through the attachment decider of ``domain``) and
queries (``queries``) of ``confab.contracts.media``, attaches the attachments
of posted messages and deletes those of deleted ones
(``projections.MessageLinks`` calling ``commands``) and those of erased users
(``projections.ErasedFiles``), purges uploads nobody
attached (the commands' sweeper), and makes link previews (``previews``).
"""

from __future__ import annotations

from confab.aggregate import Aggregates
from confab.bus import CONVERSATIONS, MEDIA
from confab.eventlog import JetStreamLog
from confab.service import Service, StartupError, run_service
from confab.shell import CommandShell, routes
from confab_media import domain
from confab_media.commands import Commands, ingests_bucket, uploads_store
from confab_media.handlers import Lookups
from confab_media.previews import Previews
from confab_media.projections import AttachmentsProjection, ErasedFiles, MessageLinks
from confab_media.queries import Queries
from confab_media.settings import MediaSettings
from confab_media.storage import Storage
from confab_media.store import Store, upgrade


async def setup(service: Service) -> None:
    settings = service.settings
    assert isinstance(settings, MediaSettings)
    try:
        domain.parse_policies(settings.workspace_policies, domain.Policy())
    except ValueError as exc:
        raise StartupError(f"CONFAB_MEDIA_WORKSPACE_POLICIES: {exc}") from None
    # Media follows CONVERSATIONS: declaring it too (idempotent) means the order in
    # which services start does not matter.
    await service.declare(MEDIA, CONVERSATIONS)
    storage = Storage(settings)
    try:
        await storage.ensure_bucket()
    except Exception as exc:
        raise StartupError(f"cannot use S3 at {settings.s3_endpoint}: {exc}") from None
    service.checks["s3"] = storage.check
    uploads = await uploads_store(service.js, settings.stream_replicas)
    ingests = await ingests_bucket(service.js, settings.stream_replicas)
    assert service.engine is not None
    await upgrade(service.engine)  # an older build's table gains what this one writes
    attachments = await service.add_projection(AttachmentsProjection())
    log = JetStreamLog(service.nc, service.js, MEDIA.name)
    shell = CommandShell(Aggregates(log, domain.DECIDER, cache_size=10_000))
    store = Store(service.engine)
    lookups = Lookups(service.js, storage, settings)
    commands = Commands(shell, lookups, store, attachments, storage, uploads, ingests, settings)
    queries = Queries(service.js, store, attachments, lookups)
    # It reads every conversation event for the few posts with attachments and the few
    # deletions: in batches, a while apart, rather than a transaction per handful of
    # messages. Only a reader of someone else's upload just attached waits on it.
    lookups.links = await service.add_projection(
        MessageLinks(commands.on_message_posted, commands.on_message_deleted),
        batch_size=2000,
        linger=0.5,
    )
    # Rare (erasures), so a small batch, a while apart.
    await service.add_projection(ErasedFiles(commands.erase_files), linger=0.5)
    previews = Previews(settings, storage, shell, service.client, lookups.policy)
    await previews.start()
    service.on_stop(previews.stop)
    for request_type, handler in routes(commands, queries, previews):
        await service.rpc.serve(request_type, handler)
    commands.start_sweeper()
    service.on_stop(commands.stop_sweeper)


def main() -> None:
    run_service("media", MediaSettings, setup)


if __name__ == "__main__":
    main()
