"""The ``govern`` command. Thin: parse arguments, call the core, print.

Every failure prints one line (``file:line: message`` for policy problems, ``error: ...``
otherwise) and exits non-zero; no stack traces for expected errors.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from govern.config import Settings, load_settings
from govern.errors import GovernError, PolicyError


def _fail(message: str, code: int = 1) -> NoReturn:
    click.echo(message, err=True)
    sys.exit(code)


def _settings(config: str | None, policies: str | None = None) -> Settings:
    path = config or os.environ.get("GOVERN_CONFIG")
    if path is None and Path("govern.yaml").exists():
        path = "govern.yaml"
    overrides: dict[str, Any] = {}
    if policies:
        overrides["policy_dir"] = Path(policies)
    return load_settings(path, **overrides)


def _report(exc: GovernError) -> NoReturn:
    if isinstance(exc, PolicyError):
        for p in exc.problems:
            click.echo(str(p), err=True)
        _fail(f"{len(exc.problems)} problem(s) in the policy set")
    extra = exc.extra
    msg = f"error: {exc.detail}"
    if extra.get("purposes") is not None:
        msg += f" (purposes available: {', '.join(extra['purposes']) or 'none'})"
    _fail(msg, 2 if exc.status in (401, 403, 404) else 1)


config_option = click.option("--config", "config", type=click.Path(dir_okay=False), default=None,
                             help="Settings file (default: ./govern.yaml or $GOVERN_CONFIG).")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="govern")
def main() -> None:
    """govern: purpose-based access to datasets, masked, filtered and audited."""


# -- policy ------------------------------------------------------------------------------------

@main.group()
def policy() -> None:
    """Check, explain, test and diff policy files."""


@policy.command("check")
@click.argument("directory", required=False, type=click.Path(file_okay=False))
@config_option
def policy_check(directory: str | None, config: str | None) -> None:
    """Validate a policy folder; print every problem as file:line: message."""
    from govern.policy.load import read_policy

    d = Path(directory) if directory else _settings(config).policy_dir
    loaded, problems = read_policy(d)
    if problems:
        for p in problems:
            click.echo(f"{d / p.file if p.file in ('model.conf', 'policy.csv', 'catalog.yaml', 'masking.yaml', 'principals.yaml') else p.file}"
                       + (f":{p.line}" if p.line else "") + f": {p.message}", err=True)
        _fail(f"{len(problems)} problem(s) in {d}")
    assert loaded is not None
    from govern.policy.summary import summary

    click.echo(summary(loaded))


@policy.command("explain")
@click.argument("principal")
@click.argument("dataset")
@click.option("--purpose", required=True, help="The purpose the principal declares.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@click.option("--policies", type=click.Path(file_okay=False), default=None, help="Policy folder.")
@config_option
def policy_explain(principal: str, dataset: str, purpose: str, fmt: str, policies: str | None,
                   config: str | None) -> None:
    """Show the access plan for PRINCIPAL on DATASET, with the reason for every column."""
    from govern.access import Governor
    from govern.identity.principal import local_principal
    from govern.plan.explain import explain_text

    try:
        gov = Governor(_settings(config, policies))
        who = local_principal(gov.state.policy, principal)
        plan = gov.plan(who, dataset, purpose)
    except GovernError as exc:
        _report(exc)
    click.echo(plan.to_json() if fmt == "json" else explain_text(plan))


@policy.command("test")
@click.argument("directory", required=False, type=click.Path(file_okay=False))
@config_option
def policy_test(directory: str | None, config: str | None) -> None:
    """Run the expectations in DIRECTORY/tests/*.yaml against the policy."""
    from govern.access import Governor
    from govern.policy.testing import run_policy_tests

    settings = _settings(config, directory)
    try:
        gov = Governor(settings)
    except GovernError as exc:
        _report(exc)
    results = run_policy_tests(gov, Path(settings.policy_dir) / "tests")
    failed = [r for r in results if not r.passed]
    for r in results:
        click.echo(("ok    " if r.passed else "FAIL  ") + f"{r.location}: {r.name}")
        for f in r.failures:
            click.echo(f"      {f}")
    click.echo(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    if failed or not results:
        sys.exit(1)


@policy.command("diff")
@click.argument("old", type=click.Path(file_okay=False))
@click.argument("new", type=click.Path(file_okay=False))
@config_option
def policy_diff(old: str, new: str, config: str | None) -> None:
    """Show how every principal's plans change between two policy folders."""
    from govern.policy.diff import diff_policies

    try:
        lines = diff_policies(_settings(config), Path(old), Path(new))
    except GovernError as exc:
        _report(exc)
    for line in lines:
        click.echo(line)
    if not lines:
        click.echo("no change in any plan")


# -- preview -----------------------------------------------------------------------------------

@main.command("preview")
@click.argument("principal")
@click.argument("dataset")
@click.option("--purpose", required=True)
@click.option("--limit", type=int, default=10, show_default=True)
@click.option("--columns", default=None, help="Comma-separated columns.")
@click.option("--filter", "filter_", default=None, help="SQL predicate on the masked view.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "jsonl"]), default="table")
@click.option("--policies", type=click.Path(file_okay=False), default=None)
@config_option
def preview(principal: str, dataset: str, purpose: str, limit: int, columns: str | None,
            filter_: str | None, fmt: str, policies: str | None, config: str | None) -> None:
    """Print what PRINCIPAL would receive from DATASET, read locally."""
    from govern.access import Governor
    from govern.identity.principal import local_principal
    from govern.plan.explain import render_rows

    try:
        gov = Governor(_settings(config, policies))
        who = local_principal(gov.state.policy, principal)
        result = gov.read(who, dataset, purpose, columns=columns.split(",") if columns else None,
                          filter=filter_, limit=limit)
        table = result.reader.read_all()
    except GovernError as exc:
        _report(exc)
    click.echo(render_rows(table, fmt), nl=False)


@main.command("reidentify")
@click.argument("principal")
@click.argument("dataset")
@click.argument("tokens", nargs=-1, required=True)
@click.option("--purpose", required=True)
@click.option("--policies", type=click.Path(file_okay=False), default=None)
@config_option
def reidentify(principal: str, dataset: str, tokens: tuple[str, ...], purpose: str, policies: str | None,
               config: str | None) -> None:
    """Reverse tokenize tokens (needs the reidentify action), one value per line."""
    from govern.access import Governor
    from govern.identity.principal import local_principal

    try:
        gov = Governor(_settings(config, policies))
        values = gov.reidentify(local_principal(gov.state.policy, principal), dataset, purpose, list(tokens))
    except GovernError as exc:
        _report(exc)
    for token, value in zip(tokens, values, strict=True):
        click.echo(f"{token}\t{value}")


# -- demo --------------------------------------------------------------------------------------

@main.command("demo")
@click.option("--dir", "directory", type=click.Path(file_okay=False), default="demo", show_default=True)
@click.option("--rows", type=int, default=10_000, show_default=True)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--quiet", is_flag=True, help="Do not print the preview.")
def demo(directory: str, rows: int, seed: int, quiet: bool) -> None:
    """Generate the demo world (data, policies, keys) in DIR and show what each principal sees."""
    from govern.demo import create_demo

    try:
        info = create_demo(Path(directory), rows=rows, seed=seed)
    except GovernError as exc:
        _report(exc)
    click.echo(info.summary())
    if not quiet:
        click.echo(info.preview())


# -- serve -------------------------------------------------------------------------------------

@main.command("serve")
@config_option
@click.option("--host", default=None, help="Bind address (default from settings: 127.0.0.1).")
@click.option("--port", type=int, default=None, help="HTTP port (default 8000).")
@click.option("--pg-port", type=int, default=None,
              help="PostgreSQL wire port (default from settings: 6432; 0 disables it).")
@click.option("--no-watch", is_flag=True, help="Do not hot-reload policy files.")
def serve(config: str | None, host: str | None, port: int | None, pg_port: int | None, no_watch: bool) -> None:
    """Run the gateway (HTTP, and the PostgreSQL wire protocol for psql and BI tools)."""
    import uvicorn

    from govern.server.app import create_app
    from govern.sql.pgwire import PgServerThread
    from govern.storage.scan import use_jemalloc

    use_jemalloc()  # a long-running server: the allocator that returns freed memory (docs/performance.md)
    try:
        settings = _settings(config)
        if no_watch:
            settings = settings.model_copy(update={"watch_policies": False})
        app = create_app(settings)
    except GovernError as exc:
        _report(exc)
    h, p = host or settings.host, port or settings.port
    gateway = app.state.gateway
    wire_port = settings.pg_port if pg_port is None else pg_port
    pg: PgServerThread | None = None
    if wire_port:
        pg = PgServerThread(gateway, settings.pg_host, wire_port)
        try:
            pg.start()
        except OSError as exc:
            _fail(f"error: cannot listen for PostgreSQL clients on {settings.pg_host}:{wire_port}: "
                  f"{exc.strerror or exc} (set pg_port, or --pg-port 0 to disable)")
    click.echo(f"govern gateway on http://{h}:{p} (policy {gateway.governor.state.policy.version})")
    if pg is not None:
        click.echo(f"govern PostgreSQL wire on {settings.pg_host}:{pg.port} "
                   "(user = principal, password = API key, database = purpose)")

    class Server(uvicorn.Server):
        async def shutdown(self, sockets: Any = None) -> None:
            if pg is not None:  # stop SQL sessions before the gateway closes its audit log
                await asyncio.to_thread(pg.stop)
            await super().shutdown(sockets)

    config_ = uvicorn.Config(app, host=h, port=p, log_level=settings.log_level, access_log=False)
    try:
        Server(config_).run()
    finally:
        if pg is not None:
            pg.stop()


# -- audit -------------------------------------------------------------------------------------

@main.group()
def audit() -> None:
    """Inspect and verify the audit log."""


@audit.command("verify")
@config_option
@click.option("--url", default=None, help="Audit store (sqlite:///path or postgresql://...).")
def audit_verify(config: str | None, url: str | None) -> None:
    """Verify the hash chain; exit 1 naming the first broken record."""
    from govern.audit.log import open_audit_log

    settings = _settings(config)
    target = url or settings.audit_url or f"sqlite:///{(settings.state_dir / 'audit.db').resolve()}"
    try:
        log = open_audit_log(target, table_prefix=settings.audit_table_prefix)
        result = log.verify()
        pending = log.pending()
        log.close()
    except GovernError as exc:
        _report(exc)
    if not result.ok:
        _fail(f"audit chain BROKEN at record {result.first_broken}: {result.message}")
    click.echo(f"audit chain OK: {result.count} records verified")
    if pending:
        click.echo(f"warning: {len(pending)} request(s) started but never completed: "
                   + ", ".join(rid for rid, _ in pending[:5]))


# -- keys --------------------------------------------------------------------------------------

@main.group()
def keys() -> None:
    """Manage API keys and masking keys."""


@keys.command("create")
@click.argument("principal")
@click.option("--policies", type=click.Path(file_okay=False), default=None)
@config_option
def keys_create(principal: str, policies: str | None, config: str | None) -> None:
    """Create an API key for PRINCIPAL: its hash goes to principals.yaml, the key is printed once."""
    from govern.identity.apikeys import add_key_to_principals

    settings = _settings(config, policies)
    try:
        key = add_key_to_principals(Path(settings.policy_dir) / "principals.yaml", principal)
    except KeyError:
        _fail(f"error: unknown principal '{principal}' in {Path(settings.policy_dir) / 'principals.yaml'}")
    click.echo(key)
    click.echo(f"(stored only as a hash for '{principal}'; this is the only time the key is shown)", err=True)


@keys.command("masking-key")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--id", "key_id", default="k1", show_default=True)
def masking_key(path: str, key_id: str) -> None:
    """Write a new random masking key file (mode 0600). Add lines to rotate."""
    from govern.mask.keyfile import write_key_file

    write_key_file(Path(path), key_id)
    click.echo(f"wrote masking key '{key_id}' to {path} (the key itself is not printed)")


# -- encrypted views: CKKS keys -------------------------------------------------------------------

@main.group()
def he() -> None:
    """Manage the gateway's homomorphic encryption keys (one per dataset; docs/encryption.md)."""


def _he_keys(settings: Settings, dataset: str | None = None):  # -> KeyStore
    from govern.policy.load import load_policy
    from govern.privacy.he.keystore import KeyStore
    from govern.privacy.he.service import key_dir

    if dataset is not None and dataset not in load_policy(settings.policy_dir).datasets:
        _fail(f"error: unknown dataset '{dataset}'", 2)
    return KeyStore(key_dir(settings))


@he.command("keys")
@click.argument("dataset", required=False)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@config_option
def he_keys(dataset: str | None, fmt: str, config: str | None) -> None:
    """List key ids, creation and retirement times, and which key is active (never key bytes)."""
    try:
        infos = _he_keys(_settings(config), dataset).keys(dataset)
    except GovernError as exc:
        _report(exc)
    if fmt == "json":
        click.echo(json.dumps([i.to_dict() for i in infos], indent=2))
        return
    for i in infos:
        state = "active" if i.active else (f"retired {i.retired}" if i.retired else "live")
        click.echo(f"{i.dataset}\t{i.key_id}\tcreated {i.created}\t{state}")


@he.command("rotate")
@click.argument("dataset")
@config_option
def he_rotate(dataset: str, config: str | None) -> None:
    """Make a new active key for DATASET; older keys stay releasable until retired."""
    try:
        key_id = _he_keys(_settings(config), dataset).rotate(dataset)
    except GovernError as exc:
        _report(exc)
    click.echo(f"{dataset}: new active key {key_id}; running gateways use it for new views at once")


@he.command("retire")
@click.argument("dataset")
@click.argument("key_id")
@config_option
def he_retire(dataset: str, key_id: str, config: str | None) -> None:
    """Delete an inactive key: views made under it can no longer be released."""
    try:
        _he_keys(_settings(config), dataset).retire(dataset, key_id)
    except GovernError as exc:
        _report(exc)
    click.echo(f"{dataset}: key {key_id} retired and deleted")


# -- synthetic views: models ------------------------------------------------------------------------

@main.group()
def synth() -> None:
    """Fit and inspect the synthetic-data models (SDV) the gateway serves."""


def _synth_service(config: str | None, policies: str | None):  # -> (SyntheticService, Governor)
    from govern.access import Governor
    from govern.privacy.synthetic.service import SyntheticService

    gov = Governor(_settings(config, policies))
    return SyntheticService(gov.settings, gov)


@synth.command("fit")
@click.argument("dataset")
@click.option("--force", is_flag=True, help="Refit even if a model for this data version exists.")
@click.option("--policies", type=click.Path(file_okay=False), default=None)
@config_option
def synth_fit(dataset: str, force: bool, policies: str | None, config: str | None) -> None:
    """Fit DATASET's synthetic model here, with a progress bar, into the gateway's model store."""
    try:
        svc = _synth_service(config, policies)
        svc.require_available()
        ref = svc.reference(dataset)
        with click.progressbar(length=100, label=f"fitting {dataset}", show_percent=True,
                               item_show_func=lambda stage: stage) as bar:
            def progress(stage: str, fraction: float) -> None:
                bar.update(max(0, int(fraction * 100) - bar.pos), stage)

            manifest = svc.fit_now(ref, progress, force=force)
    except GovernError as exc:
        _report(exc)
    reports = manifest["reports"]
    quality = reports["quality"]
    dcr = reports["privacy"].get("dcr", {})
    click.echo(f"model {manifest['key']} ({manifest['synthesizer']['type']}) fitted {manifest['created']} on "
               f"{manifest['rows']['train']} rows in {manifest['seconds']['fit']}s")
    click.echo(f"  quality {quality['score']} (column shapes {quality['column_shapes']}, "
               f"pair trends {quality['column_pair_trends']})")
    click.echo(f"  exact copies in {reports['privacy']['reference_rows']} reference rows: "
               f"{reports['privacy']['exact_copies']}; DCR overfitting protection "
               f"{dcr.get('overfitting_protection', {}).get('score')}, baseline protection "
               f"{dcr.get('baseline_protection', {}).get('score')}")


@synth.command("status")
@click.argument("dataset")
@click.option("--policies", type=click.Path(file_okay=False), default=None)
@config_option
def synth_status(dataset: str, policies: str | None, config: str | None) -> None:
    """Show the state and reports of DATASET's synthetic model for its current data version."""
    try:
        svc = _synth_service(config, policies)
        status = svc.status(svc.reference(dataset))
    except GovernError as exc:
        _report(exc)
    click.echo(_json(status))


def run() -> None:  # pragma: no cover - entry point helper
    main(prog_name="govern")


if __name__ == "__main__":  # pragma: no cover
    main(prog_name="govern")


def _json(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=str)
