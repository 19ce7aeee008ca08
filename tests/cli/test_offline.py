"""CLI commands that need no coordinator, run as real processes: keys, the room file and the
manifest's signatures, sealing against an attestation file, bundles from templates, and the
offline receipt verification with its error paths (tampered receipt, wrong manifest)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sdk.party.receipts import ReceiptFile
from sdk.protocol import merkle
from sdk.protocol.canonical import canonical_json
from sdk.protocol.dsse import Envelope
from sdk.protocol.verify import log_leaf_hashes
from tests.cli.conftest import REPO, Result, fails, ok, sealroom
from tests.kit import Room, demo_tables

ROOM_TOML = """
room_id = "cliroom"
min_group_size = 5
max_runs = 5

[[parties]]
name = "brand"
public_key = "brand.pub"

[[parties]]
name = "publisher"
public_key = "publisher.pub"

[[datasets]]
name = "customers"
owner = "brand"
id_column = "email"
id_kind = "email"
epsilon_budget = "3"
schema = {{ email = "string", plan = "string", converted = "int" }}
roles = {{ plan = "dimension", converted = "measure" }}

[[datasets]]
name = "visitors"
owner = "publisher"
id_column = "email"
id_kind = "email"
epsilon_budget = "3"
schema = {{ email = "string", exposed = "int" }}
roles = {{ exposed = "dimension" }}

[workers]
providers = ["simulated"]
platform_keys = ["{platform}"]
allow_unisolated = true

[[workers.measurements]]
image_id = "{image_id}"
code_digest = "{code_digest}"
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two parties with keys, a provisioned (process) worker and a fully signed room."""
    root = tmp_path_factory.mktemp("offline")
    kit = Room(root / "kit")  # provisions a worker through `python -m enclave provision`
    att = json.loads(kit.attestation.payload)
    (root / "attestation.json").write_bytes(kit.attestation.to_json())
    homes = {p: root / f"home-{p}" for p in ("brand", "publisher")}
    for party, home in homes.items():
        ok(sealroom("keys", "new", party, "--out", str(root), home=home))
        ok(sealroom("keys", "show", "--file", str(root / f"{party}.key"), home=home))
    from sdk.protocol.keys import Signer

    (root / "room.toml").write_text(ROOM_TOML.format(
        platform=Signer.from_seed(kit.platform_seed).public_key.hex(),
        image_id=att["measurement"]["image_id"], code_digest=att["measurement"]["code_digest"]))
    ok(sealroom("room", "new", str(root / "room.toml"), "-o", str(root / "manifest.json"),
                home=homes["brand"]))
    return {"root": root, **{f"home_{p}": h for p, h in homes.items()}}


def test_keys_show_never_prints_private_material(world: dict[str, Path]) -> None:
    res = ok(sealroom("keys", "show", "--file", str(world["root"] / "brand.key")))
    key = json.loads((world["root"] / "brand.key").read_text())
    assert key["private"]["keys"] not in res.out
    assert "keyid" in res.out


def test_keys_new_refuses_to_overwrite(world: dict[str, Path]) -> None:
    fails(sealroom("keys", "new", "brand", "--out", str(world["root"])), "E_CONFLICT")


def test_manifest_signing_and_verification(world: dict[str, Path]) -> None:
    root = world["root"]
    manifest = root / "manifest.json"
    signed = root / "signed.json"
    # nobody signed yet: verify fails naming the missing parties
    fails(sealroom("room", "verify", str(manifest), home=world["home_brand"]), "E_SIGNATURE", 3)
    ok(sealroom("--key", str(root / "brand.key"), "room", "sign", str(manifest), "-o",
                str(signed), home=world["home_brand"]))
    fails(sealroom("room", "verify", str(signed), home=world["home_brand"]), "E_SIGNATURE")
    # a key that is not the manifest's key for its name cannot sign
    ok(sealroom("keys", "new", "publisher", "--out", str(root / "impostor")))
    fails(sealroom("--key", str(root / "impostor" / "publisher.key"), "room", "sign",
                   str(signed), home=world["home_publisher"]), "E_SIGNATURE")
    ok(sealroom("--key", str(root / "publisher.key"), "room", "sign", str(signed),
                home=world["home_publisher"]))
    res = ok(sealroom("room", "verify", str(signed), home=world["home_brand"]))
    assert "verified: signed by all 2 parties" in res.out
    # a changed manifest cannot silently replace the pinned one
    other = json.loads(signed.read_text())
    payload = json.loads(base64.b64decode(other["payload"]))
    payload["version"] = 2
    other["payload"] = base64.b64encode(canonical_json(payload)).decode()
    (root / "changed.json").write_text(json.dumps(other))
    fails(sealroom("room", "verify", str(root / "changed.json"), home=world["home_brand"]),
          "E_SIGNATURE")


@pytest.fixture(scope="module")
def signed_room(world: dict[str, Path]) -> Path:
    root = world["root"]
    path = root / "room-signed.json"
    ok(sealroom("--key", str(root / "brand.key"), "room", "sign", str(root / "manifest.json"),
                "-o", str(path), home=world["home_brand"]))
    ok(sealroom("--key", str(root / "publisher.key"), "room", "sign", str(path),
                home=world["home_publisher"]))
    for home in (world["home_brand"], world["home_publisher"]):
        ok(sealroom("room", "verify", str(path), home=home))
    return path


def test_seal_checks_schema_and_owner(world: dict[str, Path], signed_room: Path) -> None:
    root = world["root"]
    good = root / "customers.csv"
    good.write_text("email,plan,converted\n A@B.com ,team,1\nc@d.com,starter,0\n")
    args = ["--key", str(root / "brand.key"), "--room", "cliroom", "data", "seal", str(good),
            "--dataset", "customers", "--attestation", str(root / "attestation.json"),
            "-o", str(root / "customers-v1")]
    res = ok(sealroom(*args, home=world["home_brand"]))
    assert (root / "customers-v1.sealed").stat().st_size > 0
    statement = json.loads((root / "customers-v1.upload.json").read_text())
    assert json.loads(base64.b64decode(statement["payload"]))["row_count"] == 2
    assert "hashed email" in res.err
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"email": ["x@y.com", "Z@y.com "], "plan": ["team", "starter"],
                             "converted": pa.array([0, 1], pa.int64())}),
                   root / "customers.parquet")
    ok(sealroom(*[str(root / "customers.parquet") if a == str(good) else a for a in args[:-2]],
                "-o", str(root / "customers-pq"), home=world["home_brand"]))
    assert (root / "customers-pq.sealed").is_file()
    bad = root / "bad.csv"
    bad.write_text("email,plan,converted,ssn\nx@y.com,team,1,123\n")
    fails(sealroom(*[bad.as_posix() if a == str(good) else a for a in args],
                   home=world["home_brand"]), "E_INPUT", 2)
    wrong_type = root / "wrong.csv"
    wrong_type.write_text("email,plan,converted\nx@y.com,team,yes\n")
    fails(sealroom(*[wrong_type.as_posix() if a == str(good) else a for a in args],
                   home=world["home_brand"]), "E_INPUT")
    # the publisher cannot seal the brand's dataset
    pub = [a.replace("brand.key", "publisher.key") for a in args]
    fails(sealroom(*pub, home=world["home_publisher"]), "E_SIGNATURE")


def test_seal_refuses_an_unaccepted_attestation(world: dict[str, Path], signed_room: Path,
                                                 tmp_path: Path) -> None:
    root = world["root"]
    other = Room(tmp_path / "other", platform_seed=b"\x01" * 32)  # another platform key
    (tmp_path / "att.json").write_bytes(other.attestation.to_json())
    (tmp_path / "c.csv").write_text("email,plan,converted\na@b.com,team,1\n")
    fails(sealroom("--key", str(root / "brand.key"), "--room", "cliroom", "data", "seal",
                   str(tmp_path / "c.csv"), "--dataset", "customers", "--attestation",
                   str(tmp_path / "att.json"), "-o", str(tmp_path / "x"),
                   home=world["home_brand"]), "E_ATTESTATION", 5)
    assert not (tmp_path / "x.sealed").exists()


# offline: no coordinator to pin uploads from, so these bundles follow the newest upload
FOLLOW = ("--follow-latest", "customers", "--follow-latest", "visitors")


def test_bundle_from_template(world: dict[str, Path], signed_room: Path) -> None:
    root = world["root"]
    res = ok(sealroom("--key", str(root / "brand.key"), "--room", "cliroom", "bundle", "new",
                      "--template", "overlap", "--param", "left=customers", "--param",
                      "right=visitors", "--recipient", "brand", "--recipient", "publisher",
                      *FOLLOW, "-o", str(root / "overlap.json"), home=world["home_brand"]))
    assert "bundle " in res.out
    bundle = json.loads(base64.b64decode(json.loads((root / "overlap.json").read_text())["payload"]))
    assert bundle["kind"] == "template" and bundle["params"]["left_id"] == "email"
    assert [i["dataset"] for i in bundle["inputs"]] == ["customers", "visitors"]
    fails(sealroom("--key", str(root / "brand.key"), "--room", "cliroom", "bundle", "new",
                   "--template", "incrementality", "--param", "exposure=visitors",
                   "--param", "conversions=customers", *FOLLOW, home=world["home_brand"]),
          "E_INPUT")  # epsilon is required


def _new(world: dict[str, Path], *args: str) -> Result:
    return sealroom("--key", str(world["root"] / "brand.key"), "--room", "cliroom", "bundle",
                    "new", *args, *FOLLOW, home=world["home_brand"])


def test_bundle_from_a_sql_plan(world: dict[str, Path], signed_room: Path) -> None:
    root = world["root"]
    (root / "lift.sql").write_text(
        "SELECT v.exposed AS exposed, COUNT(*) AS people,\n"
        "       AVG(LEAST(GREATEST(c.converted, 0), 1)) AS rate\n"
        "FROM customers c JOIN visitors v ON c.email = v.email GROUP BY 1")
    res = ok(_new(world, "--query", str(root / "lift.sql"), "--epsilon", "1", "--domain",
                  "exposed=0,1", "-o", str(root / "lift.json")))
    assert "bundle " in res.out
    bundle = json.loads(base64.b64decode(json.loads((root / "lift.json").read_text())["payload"]))
    assert bundle["kind"] == "sql" and bundle["plan"]["group_by"][0]["domain"] == ["0", "1"]
    assert bundle["output"]["privacy_unit"] == "person" and bundle["output"]["dp"]["epsilon"] == "1"


@pytest.mark.parametrize("sql, construct", [
    ("SELECT c.plan, COUNT(*) AS n FROM customers c JOIN visitors v ON 1 = 1 GROUP BY 1",
     "join"),
    ("SELECT c.email AS unit, COUNT(*) AS n FROM customers c GROUP BY 1", "(id)"),
    ("SELECT (SELECT max(converted) FROM customers) AS k, COUNT(*) AS n FROM customers",
     "subquery"),
    ("SELECT c.plan, COUNT(*) AS n FROM customers c GROUP BY 1 ORDER BY 1 LIMIT 1", "LIMIT"),
])
def test_a_query_outside_the_plan_language_is_one_clear_line(
        world: dict[str, Path], signed_room: Path, sql: str, construct: str) -> None:
    root = world["root"]
    path = root / "bad.sql"
    path.write_text(sql)
    res = fails(_new(world, "--query", str(path), "-o", str(root / "bad.json")),
                "E_QUERY_REJECTED")
    assert construct in res.err
    assert not (root / "bad.json").exists()


def test_custom_code_is_refused_where_owners_did_not_allow_it(
        world: dict[str, Path], signed_room: Path) -> None:
    root = world["root"]
    (root / "custom.sql").write_text("SELECT email AS unit FROM customers")
    (root / "spec.json").write_text('{"mode": "aggregate", "privacy_unit": "unit"}')
    fails(_new(world, "--custom-code", str(root / "custom.sql"), "--output-spec",
               str(root / "spec.json"), "--input", "customers", "--input", "visitors", "-o", str(root / "c.json")),
          "E_QUERY_REJECTED")
    assert not (root / "c.json").exists()


# -- receipts -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def receipt_world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A real run through the worker entrypoint, written as a receipt file."""
    root = tmp_path_factory.mktemp("receipt")
    kit = Room(root / "kit")
    crm, visits = demo_tables()
    kit.upload(kit.alice, "crm", crm)
    kit.upload(kit.bob, "visits", visits)
    spec = {"mode": "aggregate", "privacy_unit": "uid",
            "group_by": [{"column": "exposed", "domain": ["0", "1"]}]}
    bundle = kit.bundle("SELECT c.uid, v.exposed FROM crm c JOIN visits v USING (uid)", spec)
    doc = kit.run(kit.job_dir(bundle, kit.approvals(bundle)))
    assert doc["status"] == "succeeded", doc
    entries = [Envelope.from_dict(e) for e in doc["log_entries"]]
    receipt = Envelope.from_dict(doc["receipt"])
    rec = json.loads(receipt.payload)
    leaves = log_leaf_hashes(entries)
    index, size = rec["log_index"], rec["checkpoint"]["tree_size"]
    rfile = ReceiptFile(
        room_id="room1", run_id=rec["run_id"], manifest_digest=kit.manifest_digest,
        receipt=receipt, attestations=(kit.attestation,), log_entry=entries[index],
        inclusion_proof=tuple(merkle.inclusion_proof(leaves[:size], index)),
        checkpoint=Envelope.from_dict(doc["checkpoint"]),
        outputs={k: base64.b64decode(v) for k, v in doc["outputs"].items()},
    )
    (root / "receipt.json").write_bytes(canonical_json(rfile.to_dict()))
    (root / "manifest.json").write_bytes(kit.manifest_envelope.to_json())
    (root / "alice.sealed").write_bytes(rfile.outputs["alice"])
    # the same parties and worker, another budget: a different (fully signed) manifest
    (root / "other-manifest.json").write_bytes(
        Room(root / "other", epsilon_budget="7").manifest_envelope.to_json())
    return {"root": root}


def test_receipt_verify_offline(receipt_world: dict[str, Path]) -> None:
    root = receipt_world["root"]
    res = ok(sealroom("receipt", "verify", str(root / "receipt.json"), "--manifest",
                      str(root / "manifest.json"), "--output", str(root / "alice.sealed")))
    assert "VALID" in res.out and "matches the output of alice" in res.out
    assert "UNISOLATED" in res.out


def test_receipt_verify_imports_no_pandas(receipt_world: dict[str, Path]) -> None:
    root = receipt_world["root"]
    code = (
        "import sys; from sdk.cli import main; rc = main(['receipt', 'verify', sys.argv[1], "
        "'--manifest', sys.argv[2]]); "
        "assert 'pandas' not in sys.modules and 'pyarrow' not in sys.modules, 'heavy import'; "
        "raise SystemExit(rc)"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(root / "receipt.json"),
                           str(root / "manifest.json")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def _tampered(root: Path, name: str, change) -> Path:
    data = json.loads((root / "receipt.json").read_text())
    change(data)
    path = root / name
    path.write_text(json.dumps(data))
    return path


def _edit_payload(envelope: dict, edit) -> None:
    payload = json.loads(base64.b64decode(envelope["payload"]))
    edit(payload)
    envelope["payload"] = base64.b64encode(canonical_json(payload)).decode()


def test_tampered_receipt_is_rejected(receipt_world: dict[str, Path]) -> None:
    root = receipt_world["root"]
    manifest = str(root / "manifest.json")
    status = _tampered(root, "t1.json", lambda d: _edit_payload(
        d["receipt"], lambda p: p["privacy"].update(min_group_size=1, suppressed_groups=3)))
    fails(sealroom("receipt", "verify", str(status), "--manifest", manifest), "E_ATTESTATION")
    entry = _tampered(root, "t2.json", lambda d: _edit_payload(
        d["log_entry"], lambda p: p["details"].update(status="refused")))
    fails(sealroom("receipt", "verify", str(entry), "--manifest", manifest), "E_LOG", 6)
    proof = _tampered(root, "t3.json", lambda d: d.update(
        inclusion_proof=["00" * 32] + d["inclusion_proof"][1:]))
    fails(sealroom("receipt", "verify", str(proof), "--manifest", manifest), "E_LOG")
    sealed = _tampered(root, "t4.json", lambda d: d["outputs"].update(
        alice=base64.b64encode(b"x" + base64.b64decode(d["outputs"]["alice"])).decode()))
    fails(sealroom("receipt", "verify", str(sealed), "--manifest", manifest), "E_INPUT")
    garbage = root / "t5.json"
    garbage.write_text("{not json")
    fails(sealroom("receipt", "verify", str(garbage), "--manifest", manifest), "E_INPUT")


def test_receipt_against_another_manifest(receipt_world: dict[str, Path]) -> None:
    root = receipt_world["root"]
    fails(sealroom("receipt", "verify", str(root / "receipt.json"), "--manifest",
                   str(root / "other-manifest.json")), "E_INPUT")
    fails(sealroom("receipt", "verify", str(root / "receipt.json"), "--manifest",
                   str(root / "manifest.json"), "--output", str(root / "manifest.json")),
          "E_INPUT")


def test_encrypted_key_needs_its_passphrase(tmp_path: Path) -> None:
    env = {"SEALROOM_PASSPHRASE": "correct horse"}
    ok(sealroom("keys", "new", "carol", "--passphrase", home=tmp_path, env=env))
    assert '"encrypted":true' in (tmp_path / "keys" / "carol.key").read_text()
    # showing the public part needs no passphrase; using the key does
    ok(sealroom("keys", "show", "carol", home=tmp_path))
    (tmp_path / "room.toml").write_text('room_id = "r"\n[[parties]]\nname = "carol"\n'
                                        '[[datasets]]\nname = "d"\nowner = "carol"\n'
                                        'id_column = "id"\nschema = { id = "string" }\n')
    ok(sealroom("room", "new", str(tmp_path / "room.toml"), "-o", str(tmp_path / "m.json"),
                home=tmp_path))
    fails(sealroom("room", "sign", str(tmp_path / "m.json"), home=tmp_path), "E_CONFIG")
    fails(sealroom("room", "sign", str(tmp_path / "m.json"), home=tmp_path,
                   env={"SEALROOM_PASSPHRASE": "wrong"}), "E_INPUT")
    ok(sealroom("room", "sign", str(tmp_path / "m.json"), home=tmp_path, env=env))
    ok(sealroom("room", "verify", str(tmp_path / "m.json"), home=tmp_path))


def test_errors_are_one_line_and_debug_shows_the_traceback(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.json")
    res = fails(sealroom("receipt", "verify", missing, "--manifest", missing), "E_NOT_FOUND", 12)
    res = sealroom("--debug", "receipt", "verify", missing, "--manifest", missing)
    assert res.code == 12 and "Traceback" in res.err
    fails(sealroom("bundle", "new", "--code", str(tmp_path / "q.py"), "--output-spec", missing,
                   "--input", "d", home=tmp_path), "E_")
    res = sealroom("demo", "--rows", "10")
    fails(res, "E_CONFIG", 11)


BLOCKER = '''
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("uvicorn", "fastapi", "docker", "sqlalchemy"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, _Block())
'''


def test_operator_commands_without_the_coordinator_extra(tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    env = {"PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}"}
    res = fails(sealroom("coordinator", "serve", "--data-dir", str(tmp_path / "d"), "--dev",
                         env=env), "E_CONFIG", 11)
    assert ".[coordinator,enclave]" in res.err
    fails(sealroom("worker", "provision", "--data-dir", str(tmp_path / "d"), env=env),
          "E_CONFIG", 11)
    # party commands do not need it
    ok(sealroom("keys", "new", "dave", home=tmp_path / "h", env=env))


def test_room_file_pins_hardware_registers(world: dict[str, Path], tmp_path: Path) -> None:
    """[workers.hardware.<provider>] in a room file: the registers go into the manifest every
    party signs, `room new` shows them, and a provider that pins too little is refused."""
    root = world["root"]
    base = (root / "room.toml").read_text().replace(
        'providers = ["simulated"]', 'providers = ["simulated", "aws-nitro"]')
    pcrs = {f"PCR{i}": f"{i:02x}" * 48 for i in range(3)}
    hardware = "\n[workers.hardware.aws-nitro]\n" + "".join(
        f'{name} = ["{value}"]\n' for name, value in pcrs.items())
    for name in ("brand.pub", "publisher.pub"):
        (tmp_path / name).write_bytes((root / name).read_bytes())
    (tmp_path / "room.toml").write_text(base + hardware)
    res = ok(sealroom("room", "new", str(tmp_path / "room.toml"), "-o", str(tmp_path / "m.json"),
                      home=world["home_brand"]))
    assert "aws-nitro: PCR0 000000000000, PCR1 010101010101, PCR2 020202020202; debug refused" in res.out
    payload = json.loads(base64.b64decode(json.loads((tmp_path / "m.json").read_text())["payload"]))
    assert payload["workers"]["hardware"] == {"aws-nitro": {k: [v] for k, v in pcrs.items()}}
    (tmp_path / "room.toml").write_text(base + hardware.replace('PCR2 = ["' + pcrs["PCR2"] + '"]\n', ""))
    fails(sealroom("room", "new", str(tmp_path / "room.toml"), "-o", str(tmp_path / "m2.json"),
                   home=world["home_brand"]), "E_INPUT")
    (tmp_path / "room.toml").write_text(base)
    fails(sealroom("room", "new", str(tmp_path / "room.toml"), "-o", str(tmp_path / "m3.json"),
                   home=world["home_brand"]), "E_INPUT")
