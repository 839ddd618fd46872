package pg

import (
	"bytes"
	"encoding/binary"
)

// Message type bytes of protocol 3.0 (PostgreSQL docs, "Message Formats").
// Several letters mean one thing from the client and another from the
// server ('C', 'D', 'E', 'H', 'S'), so each side has its own names.
const (
	// Frontend (client to server).
	MsgBind         byte = 'B'
	MsgClose        byte = 'C'
	MsgCopyData     byte = 'd' // both directions
	MsgCopyDone     byte = 'c' // both directions
	MsgCopyFail     byte = 'f'
	MsgDescribe     byte = 'D'
	MsgExecute      byte = 'E'
	MsgFlush        byte = 'H'
	MsgFunctionCall byte = 'F'
	MsgParse        byte = 'P'
	MsgPassword     byte = 'p' // PasswordMessage, SASLInitialResponse, SASLResponse
	MsgQuery        byte = 'Q'
	MsgSync         byte = 'S'
	MsgTerminate    byte = 'X'

	// Backend (server to client).
	MsgAuthentication           byte = 'R'
	MsgBackendKeyData           byte = 'K'
	MsgBindComplete             byte = '2'
	MsgCloseComplete            byte = '3'
	MsgCommandComplete          byte = 'C'
	MsgCopyInResponse           byte = 'G'
	MsgCopyOutResponse          byte = 'H'
	MsgCopyBothResponse         byte = 'W'
	MsgDataRow                  byte = 'D'
	MsgEmptyQueryResponse       byte = 'I'
	MsgErrorResponse            byte = 'E'
	MsgNegotiateProtocolVersion byte = 'v'
	MsgNoData                   byte = 'n'
	MsgNoticeResponse           byte = 'N'
	MsgNotificationResponse     byte = 'A'
	MsgParameterDescription     byte = 't'
	MsgParameterStatus          byte = 'S'
	MsgParseComplete            byte = '1'
	MsgPortalSuspended          byte = 's'
	MsgReadyForQuery            byte = 'Z'
	MsgRowDescription           byte = 'T'
)

// Transaction status in ReadyForQuery.
const (
	TxIdle    byte = 'I' // not in a transaction block
	TxInBlock byte = 'T' // in a transaction block
	TxFailed  byte = 'E' // in a failed transaction block: statements refused until it ends
)

// Describe and Close target kinds.
const (
	TargetStatement byte = 'S'
	TargetPortal    byte = 'P'
)

// Error and notice field codes (PostgreSQL docs, "Error and Notice Message Fields").
const (
	FieldSeverity            byte = 'S' // localized
	FieldSeverityUnlocalized byte = 'V'
	FieldCode                byte = 'C'
	FieldMessage             byte = 'M'
	FieldDetail              byte = 'D'
)

// HeaderLen is a typed message's type byte plus its length word.
const HeaderLen = 5

// SyncMessage is a whole Sync message, to write as is.
var SyncMessage = []byte{MsgSync, 0, 0, 0, 4}

// TerminateMessage is a whole Terminate message, to write as is.
var TerminateMessage = []byte{MsgTerminate, 0, 0, 0, 4}

// EmptyParse is a Parse of the unnamed statement with empty text: the
// cheapest request that earns a ParseComplete.
var EmptyParse = []byte{MsgParse, 0, 0, 0, 8, 0, 0, 0, 0}

// BeginMessage starts a typed message in dst and returns dst and the
// offset of its length word; FinishMessage fills the length in.
func BeginMessage(dst []byte, typ byte) ([]byte, int) {
	dst = append(dst, typ, 0, 0, 0, 0)
	return dst, len(dst) - 4
}

// FinishMessage writes the length of the message whose length word is at
// at, now that dst holds all of it.
func FinishMessage(dst []byte, at int) []byte {
	binary.BigEndian.PutUint32(dst[at:], uint32(len(dst)-at))
	return dst
}

// AppendQuery appends a simple-protocol Query.
func AppendQuery(dst []byte, sql string) []byte {
	dst, at := BeginMessage(dst, MsgQuery)
	dst = append(dst, sql...)
	return FinishMessage(append(dst, 0), at)
}

// AppendParse appends a Parse of sql as statement name, with no parameter
// types given (the server infers them).
func AppendParse(dst []byte, name, sql string) []byte {
	dst, at := BeginMessage(dst, MsgParse)
	dst = append(dst, name...)
	dst = append(dst, 0)
	dst = append(dst, sql...)
	dst = append(dst, 0, 0, 0)
	return FinishMessage(dst, at)
}

// AppendBindText appends a Bind of the unnamed portal to statement with
// params in text format (nil is SQL NULL) and text results.
func AppendBindText(dst []byte, statement string, params ...*string) []byte {
	dst, at := BeginMessage(dst, MsgBind)
	dst = append(dst, 0) // unnamed portal
	dst = append(dst, statement...)
	dst = append(dst, 0, 0, 0) // statement; no parameter format codes: all text
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(params)))
	for _, p := range params {
		if p == nil {
			dst = binary.BigEndian.AppendUint32(dst, 0xFFFFFFFF)
			continue
		}
		dst = binary.BigEndian.AppendUint32(dst, uint32(len(*p)))
		dst = append(dst, *p...)
	}
	dst = append(dst, 0, 0) // no result format codes: all text
	return FinishMessage(dst, at)
}

// AppendExecute appends an Execute of the unnamed portal, all rows.
func AppendExecute(dst []byte) []byte {
	return append(dst, MsgExecute, 0, 0, 0, 9, 0, 0, 0, 0, 0)
}

// AppendClose appends a Close of a statement or portal (TargetStatement,
// TargetPortal).
func AppendClose(dst []byte, target byte, name string) []byte {
	dst, at := BeginMessage(dst, MsgClose)
	dst = append(dst, target)
	dst = append(dst, name...)
	return FinishMessage(append(dst, 0), at)
}

// AppendReadyForQuery appends a ReadyForQuery with transaction status tx.
func AppendReadyForQuery(dst []byte, tx byte) []byte {
	return append(dst, MsgReadyForQuery, 0, 0, 0, 5, tx)
}

// AppendNamed appends a message of type typ whose body is head, then name
// and its NUL, then tail: a client message with one statement or portal
// name replaced.
func AppendNamed(dst []byte, typ byte, head []byte, name string, tail []byte) []byte {
	dst, at := BeginMessage(dst, typ)
	dst = append(dst, head...)
	dst = append(dst, name...)
	dst = append(dst, 0)
	dst = append(dst, tail...)
	return FinishMessage(dst, at)
}

// CString splits a NUL-terminated string off b.
func CString(b []byte) (s, rest []byte, ok bool) {
	i := bytes.IndexByte(b, 0)
	if i < 0 {
		return nil, nil, false
	}
	return b[:i], b[i+1:], true
}

// ParseParameterStatus reads a ParameterStatus body: name and value.
func ParseParameterStatus(body []byte) (name, value []byte, ok bool) {
	name, rest, ok := CString(body)
	if !ok {
		return nil, nil, false
	}
	value, _, ok = CString(rest)
	return name, value, ok
}

// CommandTag returns a CommandComplete body's tag, without its NUL.
func CommandTag(body []byte) []byte {
	if i := bytes.IndexByte(body, 0); i >= 0 {
		return body[:i]
	}
	return body
}

// ErrorField returns the value of one field of an ErrorResponse or
// NoticeResponse body, or nil.
func ErrorField(body []byte, field byte) []byte {
	for len(body) > 0 && body[0] != 0 {
		f := body[0]
		end := bytes.IndexByte(body[1:], 0)
		if end < 0 {
			return nil
		}
		if f == field {
			return body[1 : 1+end]
		}
		body = body[2+end:]
	}
	return nil
}

// IsFatal reports whether an ErrorResponse body is FATAL or PANIC: the
// server closes the connection after it.
func IsFatal(body []byte) bool {
	sev := ErrorField(body, FieldSeverityUnlocalized)
	if sev == nil {
		sev = ErrorField(body, FieldSeverity) // servers before 9.6
	}
	return bytes.Equal(sev, []byte("FATAL")) || bytes.Equal(sev, []byte("PANIC"))
}

// AppendWithoutField re-encodes the ErrorResponse or NoticeResponse raw
// (type byte and length included) without one of its fields.
func AppendWithoutField(dst, raw []byte, field byte) []byte {
	dst, at := BeginMessage(dst, raw[0])
	body := raw[HeaderLen:]
	for len(body) > 0 && body[0] != 0 {
		end := bytes.IndexByte(body[1:], 0)
		if end < 0 {
			break
		}
		if body[0] != field {
			dst = append(dst, body[:2+end]...)
		}
		body = body[2+end:]
	}
	return FinishMessage(append(dst, 0), at)
}

// ErrorCode returns the SQLSTATE of an encoded ErrorResponse (type byte
// and length included).
func ErrorCode(raw []byte) string {
	if len(raw) < HeaderLen {
		return ""
	}
	return string(ErrorField(raw[HeaderLen:], FieldCode))
}

// ErrorMessage returns the message of an encoded ErrorResponse.
func ErrorMessage(raw []byte) string {
	if len(raw) < HeaderLen {
		return ""
	}
	return string(ErrorField(raw[HeaderLen:], FieldMessage))
}
