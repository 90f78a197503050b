"""Signed versions: an OpenSSF model-signing signature over every file of a version.

A version's files are what its trainer wrote (model, companions, validation set, model card);
the signature (`model.sig`, a Sigstore bundle made with the `model-signing` package's private
key mode, no network) covers each file's sha256 by name. Verifying rebuilds that folder from the
registry's copies and checks it against each trusted public key in turn: the key that verifies
names the signer.

    python -m inference_common.signing sign  DIR --key private.pem   # writes DIR/model.sig
    python -m inference_common.signing verify DIR --key public.pem
"""

import argparse
import base64
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

SIGNATURE_FILENAME = "model.sig"
SIGNATURE_SUFFIX = ".sig"


@dataclass(frozen=True)
class SignatureCheck:
    """`status`: verified (by the trusted key named `signer`), unsigned, unknown_key (a valid
    bundle from a key none of the trusted ones is), or invalid (the files are not what was
    signed, or the bundle is unreadable)."""

    status: str
    signer: str = ""
    detail: str = ""

    @property
    def verified(self) -> bool:
        return self.status == "verified"


def folder_sign(directory: Path, *, private_key: Path) -> Path:
    """Sign every file of `directory` (but an earlier signature); returns the signature's path."""
    import model_signing

    signature = directory / SIGNATURE_FILENAME
    signature.unlink(missing_ok=True)
    model_signing.signing.Config().use_elliptic_key_signer(private_key=private_key).set_hashing_config(
        model_signing.hashing.Config().set_ignored_paths(paths=[signature])
    ).sign(directory, signature)
    return signature


def files_sign(files: Mapping[str, Path], *, private_key: Path, out: Path) -> Path:
    """Sign a version's files (by name) without changing their folder: the signature is written
    to `out`."""
    with tempfile.TemporaryDirectory(prefix="sign-") as scratch:
        folder = _folder_of(files, Path(scratch))
        signature = folder_sign(folder, private_key=private_key)
        shutil.copyfile(signature, out)
    return out


def _folder_of(files: Mapping[str, Path], scratch: Path) -> Path:
    """A folder holding exactly `files` under their names: hard links where the file system
    allows, else copies."""
    folder = scratch / "version"
    folder.mkdir()
    for name, path in files.items():
        target = folder / name
        try:
            os.link(path, target)
        except OSError:
            shutil.copyfile(path, target)
    return folder


_OTHER_KEY = "signed by another key"


def _verify_one(folder: Path, signature: Path, key: str | Path) -> str:
    """ "" when `key` verifies `signature` over `folder`; _OTHER_KEY when another key made it;
    else why it does not verify."""
    import model_signing  # imported where verifying happens: it loads Sigstore (~0.7 s)

    try:
        model_signing.verifying.Config().use_elliptic_key_verifier(public_key=key).verify(folder, signature)
    except ValueError as exc:
        # "Key mismatch: ..." another key signed it; "Signature mismatch: ..." the files changed.
        return _OTHER_KEY if str(exc).startswith("Key mismatch") else str(exc)
    except Exception as exc:  # an unreadable bundle, a key file that is not a key
        return f"{type(exc).__name__}: {exc}"
    return ""


def signature_verify(
    *, files: Mapping[str, Path], signature: Path | None, trusted_keys: Mapping[str, str | Path]
) -> SignatureCheck:
    """Check `signature` over exactly `files` (name -> local path, the signature excluded)
    against each trusted key (name -> public key file)."""
    if signature is None:
        return SignatureCheck("unsigned", detail="the version carries no signature")
    with tempfile.TemporaryDirectory(prefix="verify-") as scratch:
        folder = _folder_of(files, Path(scratch))
        for name, key in trusted_keys.items():
            problem = _verify_one(folder, signature, key)
            if problem == _OTHER_KEY:
                continue
            if problem:  # this key made it, but the files are not what it signed
                return SignatureCheck("invalid", detail=problem[:500])
            uncovered = sorted(set(files) - _signed_names(signature))
            if uncovered:  # the signer told the hasher to skip them: they are not vouched for
                return SignatureCheck(
                    "invalid", detail=f"the signature does not cover {', '.join(uncovered)}"
                )
            return SignatureCheck("verified", signer=name, detail=f"verified with the key {name!r}")
    trusted = ", ".join(trusted_keys) or "no key is trusted here"
    return SignatureCheck("unknown_key", detail=f"not signed by a trusted key ({trusted})")


def _signed_names(signature: Path) -> set[str]:
    """The file names a (verified) signature's statement lists."""
    bundle = json.loads(signature.read_text())
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    return {resource["name"] for resource in statement["predicate"]["resources"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inference_common.signing", description=__doc__)
    parser.add_argument("action", choices=["sign", "verify"])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--key", type=Path, required=True, help="private key to sign, public to verify")
    args = parser.parse_args(argv)
    if args.action == "sign":
        print(folder_sign(args.directory, private_key=args.key))
        return 0
    signature = args.directory / SIGNATURE_FILENAME
    files = {p.name: p for p in sorted(args.directory.iterdir()) if p.is_file() and p != signature}
    check = signature_verify(files=files, signature=signature, trusted_keys={args.key.stem: args.key})
    print(f"{check.status}: {check.detail}")
    return 0 if check.verified else 1


if __name__ == "__main__":
    sys.exit(main())
