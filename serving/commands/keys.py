"""``aurum keys``: API keys of the forecast service."""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(help="API keys of the forecast service: one per tenant, bound to the markets it may read.",
                  no_args_is_help=True)


def _store():
    from features.settings import AurumSettings
    from serving.keys import KeyStore

    return KeyStore.open(AurumSettings())


def _operator() -> str:
    import getpass
    import os

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name in some containers; the uid still says who
        return f"uid {os.getuid()}"


@app.command("create")
def create(
    tenant: Annotated[str, typer.Option(help="Tenant the key speaks for (letters, digits, '_', '.', '-').")],
    markets: Annotated[str, typer.Option(help="Comma-separated market codes the key may read, or '*' for every "
                                         "market (including markets registered later).")],
    admin: Annotated[bool, typer.Option("--admin", help="Also allow the service's admin operations.")] = False,
    name: Annotated[str | None, typer.Option(help="A label to recognise the key by in `aurum keys list`.")] = None,
) -> None:
    """Issue a key and print it once: only its hash is stored, it cannot be shown again."""
    with _store() as store:
        issued = store.create(tenant, markets, admin=admin, name=name, created_by=_operator())
    info = issued.info
    typer.echo(f"key id:  {info.key_id}")
    typer.echo(f"tenant:  {info.tenant}   markets: {','.join(info.markets)}   admin: {'yes' if info.admin else 'no'}")
    typer.echo(f"API key: {issued.token}")
    typer.echo("Store it now: it is shown only this once. Send it with each request as the header\n"
               f"  Authorization: Bearer {issued.token}\n"
               f"or\n  X-API-Key: {issued.token}\n"
               f"Revoke it with: aurum keys revoke {info.key_id}")


@app.command("list")
def list_keys(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's keys.")] = None,
    active: Annotated[bool, typer.Option("--active", help="Leave revoked keys out.")] = False,
) -> None:
    """Every key with tenant, markets, admin flag, creation and revocation (never secrets)."""
    with _store() as store:
        keys = store.list(tenant, include_revoked=not active)
    if not keys:
        typer.echo("no API keys" + (f" of tenant {tenant!r}" if tenant else "")
                   + "; create one with `aurum keys create`")
        return
    typer.echo(f"{'key id':<13} {'tenant':<16} {'name':<16} {'markets':<28} {'admin':<5} {'created (UTC)':<20} "
               f"{'by':<12} status")
    for k in keys:
        status = f"revoked {k.revoked_at:%Y-%m-%d %H:%M:%S}" if k.revoked_at else "active"
        typer.echo(f"{k.key_id:<13} {k.tenant:<16} {(k.name or '-'):<16} {','.join(k.markets):<28} "
                   f"{'yes' if k.admin else 'no':<5} {k.created_at:%Y-%m-%d %H:%M:%S}  {(k.created_by or '-'):<12} "
                   f"{status}")


@app.command("revoke")
def revoke(key_id: Annotated[str, typer.Argument(help="Id of the key to revoke (see `aurum keys list`).")]) -> None:
    """Revoke a key; running services stop accepting it within the key cache time."""
    with _store() as store:
        info = store.revoke(key_id)
        ttl = store.cache_seconds
    typer.echo(f"revoked {info.key_id} of tenant {info.tenant!r} at {info.revoked_at:%Y-%m-%d %H:%M:%S} UTC; "
               f"running services reject it within {ttl:g} s (AURUM_SERVING__KEY_CACHE_SECONDS)")
