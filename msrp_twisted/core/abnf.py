"""The RFC 4975 grammar (section 9) the parser and serializer share.

Each pattern sits next to the ABNF it implements, so a reader can check one
against the other. Patterns are compiled once at import; they are applied to
short, already delimited pieces (a start line, a header line), never scanned
over a body.
"""

import re

# RFC 4975 section 9:
#   ident        = ALPHANUM  3*31ident-char
#   ident-char   = ALPHANUM / "." / "-" / "+" / "%" / "="
#   transact-id  = ident
IDENT = rb"[A-Za-z0-9][A-Za-z0-9.\-+%=]{3,31}"
IDENT_RE = re.compile(IDENT + rb"\Z")
IDENT_STR_RE = re.compile(IDENT.decode("ascii") + r"\Z")

# RFC 4975 section 9:
#   req-start  = pMSRP SP transact-id SP method CRLF
#   method     = mSEND / mREPORT / other-method
#   other-method = 1*UPALPHA
#   resp-start = pMSRP SP transact-id SP status-code [SP comment] CRLF
#   status-code = 3DIGIT
#   comment    = utf8text
# The method group is deliberately looser than 1*UPALPHA so that a
# lower-case or odd method on an otherwise framable line becomes a message
# error (answerable with 400) instead of a framing error.
START_LINE_RE = re.compile(
    rb"MSRP (" + IDENT + rb") (?:"
    rb"(?P<code>[0-9]{3})(?: (?P<comment>[^\r\n]*))?"
    rb"|(?P<method>[!-~]+))\Z"
)
METHOD_RE = re.compile(r"[A-Z]+\Z")

# RFC 4975 section 9:
#   end-line = "-------" transact-id continuation-flag CRLF
#   continuation-flag = "+" / "$" / "#"
END_LINE_DASHES = b"-------"
FLAGS = frozenset(b"+$#")
FLAG_CHARS = "+$#"

# RFC 4975 section 9:
#   header-name = hname ; hname = ALPHA *token  (token per RFC 3261)
#   generic-header = hname ":" SP hval ; hval = utf8text
HEADER_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9\-.!%*_+`'~]*\Z")

# RFC 4975 section 9:
#   Byte-Range = "Byte-Range:" SP range-start "-" range-end "/" total
#   range-start = 1*DIGIT ; range-end = 1*DIGIT / "*" ; total = 1*DIGIT / "*"
BYTE_RANGE_RE = re.compile(r"\s*([0-9]{1,19})-([0-9]{1,19}|\*)/([0-9]{1,19}|\*)\s*\Z")

# RFC 4975 section 9:
#   Status = "Status:" SP namespace SP status-code [SP comment]
#   namespace = 3(DIGIT) ; "000" for these responses
STATUS_RE = re.compile(r"\s*([0-9]{3}) ([0-9]{3})(?: (.*))?\Z", re.S)

# RFC 4975 section 9:
#   Failure-Report = "Failure-Report:" SP ("yes" / "no" / "partial")
#   Success-Report = "Success-Report:" SP ("yes" / "no")
FAILURE_REPORT_VALUES = ("yes", "no", "partial")
SUCCESS_REPORT_VALUES = ("yes", "no")

# RFC 4976 section 9 (Expires, Min-Expires, Max-Expires = 1*DIGIT)
DELTA_SECONDS_RE = re.compile(r"\s*([0-9]{1,10})\s*\Z")

# Content-Type = "Content-Type:" SP media-type (RFC 4975 section 9 via
# RFC 2045); checked only for a type/subtype shape.
MEDIA_TYPE_RE = re.compile(r"\s*[!#$%&'*+\-.^_`|~0-9A-Za-z]+/[!#$%&'*+\-.^_`|~0-9A-Za-z]+(\s*;.*)?\Z", re.S)

CRLF = b"\r\n"
