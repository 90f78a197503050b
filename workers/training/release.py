"""The learning container's entry point: train, evaluate, and register the new version when it
reaches the model's minimum metric, through the registry's REST API.

    python -m workers.training.release --api https://registry.example.com --token $REGISTRY_TOKEN
    python -m workers.training.release --from path/to/trained/folder --api ... --token ...
    ... --sign-key /run/secrets/signing-key.pem      (or SIGN_KEY=...): upload a signature too

Exit codes: 0 registered, 2 below the minimum (nothing uploaded), 1 upload refused.
"""

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import httpx

from inference_common.signing import SIGNATURE_FILENAME, files_sign
from workers.training import digits


def release(
    *, folder: Path, api: str, token: str, minimum: float | None, sign_key: Path | None = None
) -> int:
    card = json.loads((folder / "model_card.json").read_text())
    gate = card.get("gate", {})
    metric = gate.get("metric", "accuracy")
    floor = gate.get("minimum", 0.0) if minimum is None else minimum
    value = card["metrics"].get(metric)
    if value is None or value < floor:
        print(f"{metric} {value} is below the minimum {floor}: not registering")
        return 2
    paths = [p for p in sorted(folder.iterdir()) if p.is_file() and p.name != SIGNATURE_FILENAME]
    with tempfile.TemporaryDirectory(prefix="sign-") as scratch:
        if sign_key is not None:  # an OpenSSF model-signing signature over every file uploaded
            paths.append(
                files_sign(
                    {p.name: p for p in paths}, private_key=sign_key, out=Path(scratch) / SIGNATURE_FILENAME
                )
            )
        elif (folder / SIGNATURE_FILENAME).is_file():
            paths.append(folder / SIGNATURE_FILENAME)  # signed where it was trained
        files = [("files", (p.name, p.read_bytes())) for p in paths]
    response = httpx.post(
        f"{api.rstrip('/')}/api/v1/models/{card['name']}/versions",
        files=files,
        headers={"Authorization": f"Token {token}"},
        timeout=600,
    )
    if response.status_code != 201:
        print(f"the registry refused the upload ({response.status_code}): {response.text[:500]}")
        return 1
    print(f"registered {card['name']} v{response.json()['number']} ({metric} {value:.4f} >= {floor})")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", required=True, help="base URL of the platform's API")
    parser.add_argument("--token", required=True, help="staff token (manage.py drf_create_token)")
    parser.add_argument("--from", dest="folder", type=Path, help="an already trained folder")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--minimum", type=float, help="override the model card's gate minimum")
    parser.add_argument(
        "--sign-key",
        type=Path,
        default=os.environ.get("SIGN_KEY") or None,
        help="EC private key (PEM) to sign the version with (default: $SIGN_KEY; none: unsigned)",
    )
    args = parser.parse_args()
    options = {"api": args.api, "token": args.token, "minimum": args.minimum, "sign_key": args.sign_key}
    if args.folder:
        sys.exit(release(folder=args.folder, **options))
    with tempfile.TemporaryDirectory() as out:
        digits.train(out=Path(out), epochs=args.epochs, seed=0)
        sys.exit(release(folder=Path(out), **options))


if __name__ == "__main__":
    main()
