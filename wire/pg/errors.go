package pg

import (
	"fmt"

	"github.com/jackc/pgx/v5/pgproto3"
)

// Error is a PostgreSQL error or notice the proxy itself reports to a client.
type Error struct {
	Severity string // ERROR or FATAL
	Code     string // SQLSTATE
	Message  string
	Detail   string
	Hint     string
}

// Error implements error.
func (e *Error) Error() string { return e.Severity + ": " + e.Message + " (SQLSTATE " + e.Code + ")" }

// AppendTo appends the encoded ErrorResponse to dst.
func (e *Error) AppendTo(dst []byte) []byte {
	msg := pgproto3.ErrorResponse{
		Severity:            e.Severity,
		SeverityUnlocalized: e.Severity,
		Code:                e.Code,
		Message:             e.Message,
		Detail:              e.Detail,
		Hint:                e.Hint,
	}
	out, err := msg.Encode(dst)
	if err != nil { // only for bodies over 1 GiB, which we never build
		return dst
	}
	return out
}

// Errorf returns an ERROR-severity Error whose message is formatted as by
// fmt.Sprintf: the statement fails, the session goes on.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Severity: "ERROR", Code: code, Message: fmt.Sprintf(format, args...)}
}

// Fatalf returns a FATAL-severity Error whose message is formatted as by
// fmt.Sprintf: the connection ends after it.
func Fatalf(code, format string, args ...any) *Error {
	return &Error{Severity: "FATAL", Code: code, Message: fmt.Sprintf(format, args...)}
}

// SQLSTATE codes the proxy reports itself.
const (
	CodeProtocolViolation     = "08P01"
	CodeConnectionFailure     = "08006"
	CodeCannotConnectNow      = "57P03"
	CodeAdminShutdown         = "57P01"
	CodeInvalidPassword       = "28P01"
	CodeInvalidAuthSpec       = "28000"
	CodeTooManyConnections    = "53300"
	CodeInsufficientPrivilege = "42501"
	CodeFeatureNotSupported   = "0A000"
	CodeInvalidParameterValue = "22023"
	CodeUndefinedObject       = "42704"
	CodeInvalidDatabase       = "3D000"
	CodeInvalidSQLStatement   = "26000"
	CodeDuplicatePrepared     = "42P05"
	CodeQueryCanceled         = "57014"
	CodeProgramLimitExceeded  = "54000"
	CodeInternalError         = "XX000"
	CodeSyntaxError           = "42601"
	CodeUniqueViolation       = "23505"
	CodeForeignKeyViolation   = "23503"
)
