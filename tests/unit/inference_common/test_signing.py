"""Signatures over a version's files: made and checked with OpenSSF model-signing, offline."""

from pathlib import Path

import pytest

from inference_common.signing import SIGNATURE_FILENAME, files_sign, folder_sign, signature_verify
from tests.hostile import key_pair


@pytest.fixture
def version(tmp_path: Path) -> dict[str, Path]:
    folder = tmp_path / "out"
    folder.mkdir()
    files = {"model.keras": b"weights", "preprocessing.pickle": b"scaler", "model_card.json": b"{}"}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return {name: folder / name for name in files}


def test_a_signed_version_verifies_and_names_its_signer(tmp_path: Path, version: dict[str, Path]) -> None:
    private, public = key_pair(tmp_path, "release")
    _, other = key_pair(tmp_path, "other")
    signature = files_sign(version, private_key=private, out=tmp_path / SIGNATURE_FILENAME)

    check = signature_verify(
        files=version, signature=signature, trusted_keys={"ci": other, "release": public}
    )

    assert check.verified and check.signer == "release"


def test_unsigned_unknown_key_and_changed_files_are_told_apart(
    tmp_path: Path, version: dict[str, Path]
) -> None:
    private, public = key_pair(tmp_path, "release")
    _, other = key_pair(tmp_path, "other")
    signature = files_sign(version, private_key=private, out=tmp_path / SIGNATURE_FILENAME)

    assert (
        signature_verify(files=version, signature=None, trusted_keys={"release": public}).status == "unsigned"
    )
    unknown = signature_verify(files=version, signature=signature, trusted_keys={"other": other})
    assert unknown.status == "unknown_key" and not unknown.verified
    version["preprocessing.pickle"].write_bytes(b"swapped")
    changed = signature_verify(files=version, signature=signature, trusted_keys={"release": public})
    assert changed.status == "invalid" and "preprocessing.pickle" in changed.detail
    extra = {**version, "validation.csv": tmp_path / "validation.csv"}
    extra["validation.csv"].write_text("a,label\n1,0\n")
    assert (
        signature_verify(files=extra, signature=signature, trusted_keys={"release": public}).status
        == "invalid"
    )


def test_a_file_the_signer_left_out_is_not_vouched_for(tmp_path: Path, version: dict[str, Path]) -> None:
    """model-signing lets a signer skip paths; the registry needs every file covered."""
    import model_signing

    private, public = key_pair(tmp_path, "release")
    folder = version["model.keras"].parent
    signature = tmp_path / SIGNATURE_FILENAME
    model_signing.signing.Config().use_elliptic_key_signer(private_key=private).set_hashing_config(
        model_signing.hashing.Config().set_ignored_paths(paths=["preprocessing.pickle"])
    ).sign(folder, signature)

    check = signature_verify(files=version, signature=signature, trusted_keys={"release": public})

    assert check.status == "invalid" and "does not cover preprocessing.pickle" in check.detail


def test_the_command_line_signs_a_training_folder(tmp_path: Path, version: dict[str, Path]) -> None:
    private, public = key_pair(tmp_path, "release")
    folder = version["model.keras"].parent
    signature = folder_sign(folder, private_key=private)
    assert signature == folder / SIGNATURE_FILENAME
    # Signing again replaces the signature instead of signing it.
    folder_sign(folder, private_key=private)
    assert signature_verify(files=version, signature=signature, trusted_keys={"release": public}).verified
