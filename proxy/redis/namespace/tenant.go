package namespace

import "errors"

// MaxTenantLen bounds the length of a tenant id New accepts. Policy ids are
// at most 63 bytes; the bound only keeps prefixes short.
const MaxTenantLen = 255

// Errors New returns.
var (
	// ErrEmptyTenant: the tenant id is empty.
	ErrEmptyTenant = errors.New("namespace: empty tenant id")
	// ErrTenantTooLong: the tenant id is longer than MaxTenantLen.
	ErrTenantTooLong = errors.New("namespace: tenant id too long")
	// ErrMode: the mode is neither Spread nor OneSlot.
	ErrMode = errors.New("namespace: unknown mode")
)

const hexDigits = "0123456789ABCDEF"

// AppendEncodedTenant appends the encoding of a tenant id to dst: bytes in
// [a-z0-9_-] as they are, every other byte as '%' and two upper-case hex
// digits. The encoding is injective ('%' itself is escaped) and never
// contains ':', '{', '}', '*', '?', '[', ']' or '\'.
func AppendEncodedTenant(dst []byte, tenantID string) []byte {
	for i := range len(tenantID) {
		c := tenantID[i]
		if plainTenantByte(c) {
			dst = append(dst, c)
			continue
		}
		dst = append(dst, '%', hexDigits[c>>4], hexDigits[c&15])
	}
	return dst
}

// plainTenantByte reports whether c is kept as is by AppendEncodedTenant.
func plainTenantByte(c byte) bool {
	return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_' || c == '-'
}
