#!/usr/bin/env python3
"""Validates EPCIS 2.0 JSON-LD documents against GS1's JSON schema (docs/epcis.md).

Usage: epcis_validate.py SCHEMA DOCUMENT...

Prints every violation as `DOCUMENT: /json/path: message` and exits 1 if there is one,
0 if every document is valid, 2 on bad usage or an unreadable file. Needs the jsonschema
module (Debian: python3-jsonschema, which scripts/setup.sh installs).

The schema's "uri" and "date-time" formats are checked here, strictly (an absolute
RFC 3986 URI; an RFC 3339 date-time), because jsonschema checks them only when optional
packages happen to be installed, and silently passes them otherwise.
"""

import json
import re
import sys
from datetime import datetime

import jsonschema

# scheme ":" then only characters RFC 3986 allows in a URI; percent escapes checked apart.
URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*$")
BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+\-]\d{2}:\d{2})$")


def format_checker():
    checker = jsonschema.FormatChecker()

    @checker.checks("uri")
    def is_uri(value):
        if not isinstance(value, str):
            return True
        return bool(URI.match(value)) and not BAD_ESCAPE.search(value)

    @checker.checks("date-time")
    def is_date_time(value):
        if not isinstance(value, str):
            return True
        if not DATE_TIME.match(value):
            return False
        # fromisoformat checks the calendar (no 30 February); it wants at most 6 fraction digits.
        text = re.sub(r"(\.\d{6})\d+", r"\1", value.upper().replace("Z", "+00:00"))
        try:
            datetime.fromisoformat(text)
        except ValueError:
            return False
        return True

    return checker


def main(argv):
    if len(argv) < 3:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    try:
        with open(argv[1], encoding="utf-8") as f:
            schema = json.load(f)
    except (OSError, ValueError) as e:
        print(f"{argv[1]}: {e}", file=sys.stderr)
        return 2
    validator = jsonschema.Draft7Validator(schema, format_checker=format_checker())
    failed = False
    for path in argv[2:]:
        try:
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
        except (OSError, ValueError) as e:
            print(f"{path}: {e}", file=sys.stderr)
            return 2
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
        for e in errors:
            where = "/" + "/".join(str(p) for p in e.absolute_path)
            print(f"{path}: {where}: {e.message}")
        failed = failed or bool(errors)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
