"""An independent reader of a Snowflake internal stage on S3 (moto) for cdrsync's tests.

Usage: stage_reader.py ENDPOINT BUCKET PREFIX, or stage_reader.py --gcs-file PATH (a body a
GCS stand-in received, its headers in the stdin JSON as "headers", parsed as the
connector's gcs_storage_client.py does on download); with the stage's encryption material on
stdin as JSON {"queryStageMasterKey": ..., "queryId": ..., "smkId": ...} (never printed).
Lists the objects below PREFIX with boto3 (explicit loopback endpoint and credentials),
reads each one's metadata and bytes, and decrypts it with the vendor connector's own
SnowflakeEncryptionUtil.decrypt_file, as the connector does on GET. Prints one JSON line:
{"objects": [{"key", "metadata", "stored_len", "plaintext_b64"} ...]} or {"error": ...}.
"""
import base64
import json
import os
import sys
import tempfile

import boto3
from snowflake.connector.constants import EncryptionMetadata
from snowflake.connector.encryption_util import SnowflakeEncryptionUtil
from snowflake.connector.storage_client import SnowflakeFileEncryptionMaterial

material = json.loads(sys.stdin.read())
snow_material = SnowflakeFileEncryptionMaterial(
    query_stage_master_key=material["queryStageMasterKey"],
    query_id=material["queryId"],
    smk_id=material["smkId"],
)

if sys.argv[1] == "--gcs-file":
    try:
        headers = material["headers"]
        encryptiondata = json.loads(headers["x-goog-meta-encryptiondata"])
        meta = EncryptionMetadata(
            key=encryptiondata["WrappedContentKey"]["EncryptedKey"],
            iv=encryptiondata["ContentEncryptionIV"],
            matdesc=headers["x-goog-meta-matdesc"],
        )
        with tempfile.TemporaryDirectory() as tmp:
            plain_path = SnowflakeEncryptionUtil.decrypt_file(
                meta, snow_material, sys.argv[2], tmp_dir=tmp
            )
            with open(plain_path, "rb") as f:
                plain = f.read()
        print(json.dumps({"plaintext_b64": base64.b64encode(plain).decode()}))
    except Exception as e:  # noqa: BLE001 - reported to the test
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
    sys.exit(0)

endpoint, bucket, prefix = sys.argv[1], sys.argv[2], sys.argv[3]
s3 = boto3.client(
    "s3",
    endpoint_url=endpoint,
    region_name="us-east-1",
    aws_access_key_id="test",
    aws_secret_access_key="test",
)
try:
    out = []
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    with tempfile.TemporaryDirectory() as tmp:
        for obj in listed:
            key = obj["Key"]
            head = s3.head_object(Bucket=bucket, Key=key)
            meta = head["Metadata"]
            stored = os.path.join(tmp, "stored")
            s3.download_file(bucket, key, stored)
            plain_path = SnowflakeEncryptionUtil.decrypt_file(
                EncryptionMetadata(
                    key=meta["x-amz-key"], iv=meta["x-amz-iv"], matdesc=meta["x-amz-matdesc"]
                ),
                snow_material,
                stored,
                tmp_dir=tmp,
            )
            with open(plain_path, "rb") as f:
                plain = f.read()
            out.append(
                {
                    "key": key,
                    "metadata": meta,
                    "content_type": head.get("ContentType"),
                    "stored_len": os.path.getsize(stored),
                    "plaintext_b64": base64.b64encode(plain).decode(),
                }
            )
    print(json.dumps({"objects": out}))
except Exception as e:  # noqa: BLE001 - reported to the test
    print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
