"""TLS for the Dask clusters that run the jobs: only processes holding the cluster's certificate may connect.

A Dask scheduler without TLS runs whatever any process that reaches its port sends it, as the account of its
workers (every user's files in reach). So :func:`sccore.jobs.connect` starts its local cluster with a certificate
made for it (Dask's ``Security.temporary``, written into a folder only this account can read) and requires TLS,
and connects to a lab's scheduler only over ``tls://``, with the certificate Dask's own configuration names
(``distributed.comm.tls.*``: a ``distributed.yaml`` or the ``DASK_DISTRIBUTED__COMM__TLS__*`` variables that
:func:`tls_environment` lists). ``python -m sccore dask-certificates DIR`` makes such a certificate for a lab's
cluster (scheduler, workers and the app share it; keep the folder private to the service account).
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import InputError

CA_FILE, CERT_FILE, KEY_FILE = "ca.pem", "cert.pem", "key.pem"
ROLES = ("scheduler", "worker", "client")


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to a new file that only this account can read or write (mode 0600)."""
    handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(handle, "w") as stream:
        stream.write(text)


def write_certificates(folder: str | os.PathLike) -> Path:
    """A new self-signed certificate and key for every role of a Dask cluster (Dask's ``Security.temporary``),
    written as ``ca.pem``, ``cert.pem`` and ``key.pem`` into ``folder`` (made with mode 0700; it must not hold
    them already). Returns the folder."""
    from distributed.security import Security

    folder = Path(folder)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    if any((folder / name).exists() for name in (CA_FILE, CERT_FILE, KEY_FILE)):
        raise InputError(f"{folder} already holds a certificate: use it, or choose an empty folder.")
    made = Security.temporary()
    _write_private(folder / KEY_FILE, made.tls_scheduler_key)
    _write_private(folder / CERT_FILE, made.tls_scheduler_cert)
    _write_private(folder / CA_FILE, made.tls_ca_file)
    return folder


def tls_config(folder: str | os.PathLike) -> dict[str, object]:
    """Dask's configuration (``dask.config.set`` keys) that makes every role use the certificate in ``folder``
    (:func:`write_certificates`) and refuse unencrypted connections."""
    folder = Path(folder).absolute()
    config: dict[str, object] = {"distributed.comm.require-encryption": True,
                                 "distributed.comm.tls.ca-file": str(folder / CA_FILE)}
    for role in ROLES:
        config[f"distributed.comm.tls.{role}.cert"] = str(folder / CERT_FILE)
        config[f"distributed.comm.tls.{role}.key"] = str(folder / KEY_FILE)
    return config


def tls_environment(folder: str | os.PathLike) -> dict[str, str]:
    """:func:`tls_config` as the environment variables Dask reads (``DASK_DISTRIBUTED__COMM__...``), for the
    processes of a cluster (``dask scheduler``, ``dask worker``) and the app."""
    return {"DASK_" + key.upper().replace(".", "__").replace("-", "_"): str(value)
            for key, value in tls_config(folder).items()}


def security(folder: str | os.PathLike):
    """A ``distributed.security.Security`` for the certificate in ``folder`` (:func:`write_certificates`)."""
    from distributed.security import Security

    folder = Path(folder)
    return Security(tls_ca_file=str(folder / CA_FILE), tls_client_cert=str(folder / CERT_FILE),
                    tls_client_key=str(folder / KEY_FILE), require_encryption=True)


def configured_security(address: str):
    """The ``Security`` for a lab's scheduler at ``address``, from Dask's configuration; :class:`InputError`
    naming the fix for an address without TLS or a configuration without a certificate."""
    import dask
    from distributed.security import Security

    if not address.startswith("tls://"):
        raise InputError(f"The Dask scheduler {address} is not reached over TLS, so anyone who can reach its port could "
                         "run code on its workers. Start the cluster with a certificate (`python -m sccore "
                         "dask-certificates DIR` makes one; `dask scheduler --tls-ca-file DIR/ca.pem --tls-cert "
                         "DIR/cert.pem --tls-key DIR/key.pem`, the same for `dask worker`), give its tls:// address, "
                         "and set the DASK_DISTRIBUTED__COMM__TLS__* variables that command prints (README, 'An "
                         "existing cluster').")
    if not dask.config.get("distributed.comm.tls.ca-file", None):
        raise InputError(f"No certificate to reach {address}: set the DASK_DISTRIBUTED__COMM__TLS__* variables (or "
                         "Dask's distributed.comm.tls settings) to the cluster's certificate folder, as "
                         "`python -m sccore dask-certificates` prints them.")
    return Security(require_encryption=True)
