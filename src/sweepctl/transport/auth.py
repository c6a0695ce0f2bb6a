"""Authentication: public keys only, in OpenSSH's order, and an error that says what was tried.

IdentityFile keys first, then ssh-agent keys, then the default `~/.ssh/id_*` files when no
IdentityFile is set; IdentitiesOnly narrows the agent to the configured keys. sweepctl never
prompts (its commands run in scripts and watch loops), so a passphrase-protected key works
through the agent or not at all, and a server that wants a password or a second factor is an
error naming what to change.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from sweepctl.transport.base import home_tilde

if TYPE_CHECKING:  # only for annotations: importing paramiko at runtime is deferred
    import paramiko

    from sweepctl.transport.target import SSHTarget

DEFAULT_IDENTITY_FILES = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")


class AuthFailed(Exception):
    def __init__(self, tried: list[str], extra: str = ""):
        super().__init__("authentication failed")
        self.tried, self.extra = tried, extra


def auth_strategy(target: SSHTarget) -> Any:
    """Public-key auth in OpenSSH's spirit: IdentityFile keys, then ssh-agent keys, then the
    default `~/.ssh/id_*` when no IdentityFile is set; records what was tried for the error."""
    import paramiko
    from paramiko.auth_strategy import AuthStrategy

    class KeyAuth(AuthStrategy):
        def __init__(self) -> None:
            super().__init__(ssh_config=None)

        def authenticate(self, transport: paramiko.Transport) -> list[str]:
            tried: list[str] = []
            seen: set[bytes] = set()
            files = target.identity_files or tuple(os.path.expanduser(p) for p in DEFAULT_IDENTITY_FILES)
            encrypted_pubs: set[bytes] = set()

            def attempt(key: paramiko.PKey) -> bool:
                seen.add(key.asbytes())
                try:
                    remaining = transport.auth_publickey(target.user, key)
                except paramiko.AuthenticationException:  # includes BadAuthenticationType
                    return False
                except (paramiko.SSHException, EOFError, OSError):
                    if transport.is_active():
                        raise
                    # sshd hangs up after MaxAuthTries (6) keys: an agent full of keys does that.
                    raise AuthFailed(tried, "the server closed the connection after too many keys "
                                             "(MaxAuthTries); set IdentitiesOnly yes with the right "
                                             "IdentityFile") from None
                if remaining:  # the server wants a second factor (password, OTP)
                    raise AuthFailed(tried, f"the server also wants {'/'.join(remaining)}, which sweepctl "
                                             "does not do; allow key-only login for this user")
                return True

            for path in files:
                shown = home_tilde(path)
                if not os.path.exists(path):
                    if target.identity_files:  # defaults that do not exist are not worth a mention
                        tried.append(f"{shown} (missing)")
                    continue
                try:
                    key = paramiko.PKey.from_path(path)
                except (paramiko.PasswordRequiredException, TypeError):
                    # (TypeError: what `cryptography` raises for an encrypted OpenSSH-format key.)
                    # Never prompt (commands run in scripts and watch loops); the agent may hold it.
                    pub = _public_blob(path + ".pub")
                    if pub:
                        encrypted_pubs.add(pub)
                    tried.append(f"{shown} (passphrase-protected, not in ssh-agent)")
                    continue
                except (paramiko.SSHException, OSError, ValueError) as e:
                    tried.append(f"{shown} (unreadable: {type(e).__name__})")
                    continue
                if attempt(key):
                    return tried
                tried.append(f"{shown} (rejected)")

            agent_keys: tuple[Any, ...] = ()
            agent = None
            try:
                agent = paramiko.Agent()
                agent_keys = agent.get_keys()
            except paramiko.SSHException:
                agent_keys = ()
            try:
                usable = [k for k in agent_keys if k.asbytes() not in seen]
                if target.identities_only:
                    # IdentitiesOnly: only agent keys that belong to a configured IdentityFile.
                    wanted = {_public_blob(p + ".pub") for p in target.identity_files} | encrypted_pubs
                    usable = [k for k in usable if k.asbytes() in wanted]
                rejected = 0
                for key in usable:
                    if attempt(key):
                        # A passphrase-protected file whose key the agent held was not a failure.
                        return tried
                    rejected += 1
            finally:
                if agent is not None:
                    agent.close()
            if agent_keys:
                tried.append(f"{rejected} ssh-agent key(s) (rejected)" if rejected
                             else "ssh-agent (no usable key)")
            else:
                tried.append("ssh-agent (no keys)" if os.environ.get("SSH_AUTH_SOCK") else "no ssh-agent")
            raise AuthFailed(tried)

    return KeyAuth()


def _public_blob(pub_path: str) -> bytes | None:
    import base64

    try:
        with open(pub_path) as f:
            return base64.b64decode(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None
