#!/usr/bin/env python3
"""Reads TensorBoard event files without TensorFlow or TensorBoard: an independent check of
what ftune writes (worker/train/tensorboard.cc shares no code with this).

usage: read_tfevents.py RUN_DIR
Prints one JSON object: files (name order, as TensorBoard reads them), file_versions,
scalars {tag: [[step, value, wall_time], ...]}, texts {tag: [[step, text], ...]} and
session_logs [[step, status], ...]. Exits 1 naming the file and byte offset of the first
record whose framing or CRC is wrong, or whose protobuf does not decode.

Record framing (TFRecord): uint64 length, uint32 masked CRC-32C of the 8 length bytes, data,
uint32 masked CRC-32C of data, little-endian; mask(crc) = ((crc >> 15 | crc << 17) + 0xa282ead8).
"""
import json
import os
import struct
import sys


def crc32c(data):
    """CRC-32C (Castagnoli), bit by bit: slow and obviously right."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def masked(crc):
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


class DecodeError(Exception):
    pass


def varint(buf, pos):
    value, shift = 0, 0
    while True:
        if pos >= len(buf):
            raise DecodeError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise DecodeError("varint too long")


def fields(buf):
    """(field number, wire type, value) of a protobuf message; value is int, bytes or raw."""
    pos = 0
    while pos < len(buf):
        key, pos = varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = varint(buf, pos)
        elif wire == 1:
            if pos + 8 > len(buf):
                raise DecodeError("truncated fixed64")
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            length, pos = varint(buf, pos)
            if pos + length > len(buf):
                raise DecodeError("truncated length-delimited field")
            value, pos = buf[pos:pos + length], pos + length
        elif wire == 5:
            if pos + 4 > len(buf):
                raise DecodeError("truncated fixed32")
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise DecodeError("unsupported wire type %d" % wire)
        yield number, wire, value


def decode_value(buf):
    """Summary.Value: tag 1, simple_value 2 (float), tensor 8, metadata 9."""
    out = {"tag": None, "simple_value": None, "plugin": None, "strings": []}
    for number, wire, value in fields(buf):
        if number == 1 and wire == 2:
            out["tag"] = value.decode("utf-8")
        elif number == 2 and wire == 5:
            out["simple_value"] = struct.unpack("<f", value)[0]
        elif number == 8 and wire == 2:  # TensorProto: string_val 8
            out["strings"] += [v.decode("utf-8") for n, w, v in fields(value) if n == 8 and w == 2]
        elif number == 9 and wire == 2:  # SummaryMetadata: plugin_data 1 -> plugin_name 1
            for n, w, v in fields(value):
                if n == 1 and w == 2:
                    for n2, w2, v2 in fields(v):
                        if n2 == 1 and w2 == 2:
                            out["plugin"] = v2.decode("utf-8")
    return out


def decode_event(buf):
    """Event: wall_time 1 (double), step 2, file_version 3, summary 5, session_log 7."""
    event = {"wall_time": 0.0, "step": 0, "file_version": None, "values": [], "session": None}
    for number, wire, value in fields(buf):
        if number == 1 and wire == 1:
            event["wall_time"] = struct.unpack("<d", value)[0]
        elif number == 2 and wire == 0:
            event["step"] = value - (1 << 64) if value >= 1 << 63 else value
        elif number == 3 and wire == 2:
            event["file_version"] = value.decode("utf-8")
        elif number == 5 and wire == 2:
            event["values"] += [decode_value(v) for n, w, v in fields(value) if n == 1 and w == 2]
        elif number == 7 and wire == 2:
            status = 0
            for n, w, v in fields(value):
                if n == 1 and w == 0:
                    status = v
            event["session"] = status
    return event


def records(path):
    with open(path, "rb") as f:
        data = f.read()
    pos = 0
    while pos < len(data):
        if pos + 12 > len(data):
            raise DecodeError("%s: torn header at byte %d" % (path, pos))
        header = data[pos:pos + 8]
        (length,) = struct.unpack("<Q", header)
        (length_crc,) = struct.unpack("<I", data[pos + 8:pos + 12])
        if length_crc != masked(crc32c(header)):
            raise DecodeError("%s: bad length CRC at byte %d" % (path, pos))
        end = pos + 12 + length
        if end + 4 > len(data):
            raise DecodeError("%s: torn record at byte %d" % (path, pos))
        body = data[pos + 12:end]
        (data_crc,) = struct.unpack("<I", data[end:end + 4])
        if data_crc != masked(crc32c(body)):
            raise DecodeError("%s: bad data CRC at byte %d" % (path, pos))
        yield pos, body
        pos = end + 4


def main():
    run_dir = sys.argv[1]
    names = sorted(n for n in os.listdir(run_dir) if "tfevents" in n and not n.startswith("."))
    out = {"files": names, "file_versions": [], "scalars": {}, "texts": {}, "session_logs": []}
    try:
        for name in names:
            path = os.path.join(run_dir, name)
            for pos, body in records(path):
                try:
                    event = decode_event(body)
                except DecodeError as e:
                    raise DecodeError("%s: record at byte %d: %s" % (path, pos, e))
                if event["file_version"] is not None:
                    out["file_versions"].append(event["file_version"])
                if event["session"] is not None:
                    out["session_logs"].append([event["step"], event["session"]])
                for v in event["values"]:
                    if v["simple_value"] is not None:
                        out["scalars"].setdefault(v["tag"], []).append(
                            [event["step"], v["simple_value"], event["wall_time"]])
                    elif v["plugin"] == "text":
                        out["texts"].setdefault(v["tag"], []).extend(
                            [event["step"], s] for s in v["strings"])
    except DecodeError as e:
        print(e, file=sys.stderr)
        return 1
    json.dump(out, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
