package pg

import (
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// Startup parameters.
//
// A client may set, in its startup packet or in the "options" parameter
// (libpq's PGOPTIONS and options=-c name=value, JDBC's options), the
// settings below and nothing else. They are never forwarded as such: each
// is validated here, kept per client, and replayed onto whichever server
// connection serves the client's transactions (params.go), as PgBouncer's
// track_extra_parameters does. A tenant's statement_timeout limit caps what
// a client asks for: asking 60s under a 30s limit gets 30s, which SHOW
// statement_timeout then reports. Anything else is refused with FATAL 42501
// before authentication.

// paramSpec is a setting the proxy keeps per client and replays.
type paramSpec struct {
	name     string // canonical spelling, as SHOW prints it
	reported bool   // the server sends ParameterStatus when it changes (GUC_REPORT)
	check    func(v string) error
}

// trackedParams are the settings a client may set at startup.
var trackedParams = [...]paramSpec{
	{"application_name", true, nil},
	{"DateStyle", true, checkDateStyle},
	{"IntervalStyle", true, oneOf("postgres", "postgres_verbose", "sql_standard", "iso_8601")},
	{"TimeZone", true, checkTimeZone},
	{"extra_float_digits", false, checkFloatDigits},
	{"statement_timeout", false, checkDuration},
	{"lock_timeout", false, checkDuration},
	{"idle_in_transaction_session_timeout", false, checkDuration},
	{"search_path", false, nil},
	{"default_transaction_isolation", false, oneOf("serializable", "repeatable read", "read committed", "read uncommitted")},
	{"default_transaction_read_only", false, checkBool},
	{"default_transaction_deferrable", false, checkBool},
	{"bytea_output", false, oneOf("hex", "escape")},
	{"client_min_messages", false, oneOf("debug5", "debug4", "debug3", "debug2", "debug1", "debug", "log", "notice", "warning", "error")},
}

// statementTimeout is the position of statement_timeout in trackedParams.
var statementTimeout = trackedIndex("statement_timeout")

// trackedIndex is the position of a tracked setting in trackedParams, or -1.
// Setting names are case-insensitive, as PostgreSQL's are.
func trackedIndex(name string) int {
	for i := range trackedParams {
		if strings.EqualFold(trackedParams[i].name, name) {
			return i
		}
	}
	return -1
}

// allowedNames lists what a client may set, for error messages.
func allowedNames() string {
	names := []string{"client_encoding"}
	for _, p := range trackedParams {
		names = append(names, p.name)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// startupSetting records one setting of a startup packet (or of its
// options) in params, by canonical name, refusing what may not be set.
func startupSetting(params map[string]string, name, value, via string) error {
	if len(value) > 256 || strings.ContainsRune(value, 0) {
		return fmt.Errorf("invalid value for parameter %q", name)
	}
	if strings.EqualFold(name, "client_encoding") {
		// Upstream connections are pinned to UTF8; ASCII (psql's choice in
		// the C locale) is a subset of it.
		switch strings.ToUpper(strings.ReplaceAll(value, "-", "")) {
		case "UTF8", "UNICODE", "SQL_ASCII", "SQLASCII":
			params["client_encoding"] = value
			return nil
		}
		return &paramError{fmt.Sprintf("client_encoding %q is not supported: tenantguard speaks UTF8 only", value), true}
	}
	i := trackedIndex(name)
	if i < 0 {
		return &paramError{fmt.Sprintf("%s %q is not allowed (allowed: %s)", via, name, allowedNames()), false}
	}
	p := trackedParams[i]
	if p.check != nil {
		if err := p.check(value); err != nil {
			return &paramError{fmt.Sprintf("invalid value for parameter %q: %q: %v", p.name, value, err), true}
		}
	}
	params[p.name] = value
	return nil
}

// paramError is a refused startup setting: not allowed at all (42501), or
// a bad value (22023).
type paramError struct {
	msg      string
	badValue bool
}

func (e *paramError) Error() string { return e.msg }

// parseOptions splits the "options" startup parameter as the postmaster
// does (backslash escapes the next character) and returns its settings:
// "-c name=value", "-cname=value" and "--name=value" ("-" in the name is
// "_"). Any other command-line switch is refused.
func parseOptions(s string) ([][2]string, error) {
	var words []string
	var w strings.Builder
	inWord, esc := false, false
	for _, r := range s {
		switch {
		case esc:
			w.WriteRune(r)
			esc, inWord = false, true
		case r == '\\':
			esc = true
		case unicode.IsSpace(r):
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
		default:
			w.WriteRune(r)
			inWord = true
		}
	}
	if inWord || esc {
		words = append(words, w.String())
	}
	var out [][2]string
	for i := 0; i < len(words); i++ {
		var kv string
		switch word := words[i]; {
		case word == "-c":
			if i+1 >= len(words) {
				return nil, errors.New(`"-c" without a setting`)
			}
			i++
			kv = words[i]
		case strings.HasPrefix(word, "-c"):
			kv = word[2:]
		case strings.HasPrefix(word, "--"):
			kv = word[2:]
			if k, v, ok := strings.Cut(kv, "="); ok {
				kv = strings.ReplaceAll(k, "-", "_") + "=" + v
			}
		default:
			return nil, fmt.Errorf("command-line switch %q is not allowed (only -c name=value)", word)
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%q is not name=value", kv)
		}
		out = append(out, [2]string{k, v})
	}
	return out, nil
}

// --- value checks ---

func oneOf(values ...string) func(string) error {
	return func(v string) error {
		for _, x := range values {
			if strings.EqualFold(strings.TrimSpace(v), x) {
				return nil
			}
		}
		return fmt.Errorf("want one of %s", strings.Join(values, ", "))
	}
}

func checkBool(v string) error {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "on", "off", "true", "false", "yes", "no", "1", "0", "t", "f", "y", "n":
		return nil
	}
	return errors.New("want on or off")
}

func checkFloatDigits(v string) error {
	n, err := strconv.Atoi(v)
	if err != nil || n < -15 || n > 3 {
		return errors.New("an integer from -15 to 3")
	}
	return nil
}

func checkDateStyle(v string) error {
	for _, tok := range strings.Split(v, ",") {
		switch strings.ToUpper(strings.TrimSpace(tok)) {
		case "ISO", "SQL", "POSTGRES", "GERMAN", "DMY", "MDY", "YMD", "EURO", "EUROPEAN", "US", "NONEURO", "NONEUROPEAN":
		default:
			return fmt.Errorf("unknown style %q", strings.TrimSpace(tok))
		}
	}
	return nil
}

var utcOffset = regexp.MustCompile(`^[+-]?\d{1,2}(:\d{2}){0,2}$`)

// checkTimeZone accepts zone names the system's tz database knows and
// numeric offsets; PostgreSQL ships the same IANA database.
func checkTimeZone(v string) error {
	if utcOffset.MatchString(v) {
		return nil
	}
	if v == "" || strings.Contains(v, "..") || strings.HasPrefix(v, "/") {
		return errors.New("not a time zone")
	}
	if _, err := time.LoadLocation(v); err != nil {
		return errors.New("not a time zone")
	}
	return nil
}

func checkDuration(v string) error {
	_, err := parseDuration(v)
	return err
}

// parseDuration reads a time setting as PostgreSQL does for a millisecond
// GUC: a number (milliseconds) or a number and a unit (us, ms, s, min, h, d).
func parseDuration(v string) (time.Duration, error) {
	v = strings.TrimSpace(v)
	i := strings.IndexFunc(v, func(r rune) bool { return !(r >= '0' && r <= '9' || r == '.') })
	num, unit := v, "ms"
	if i >= 0 {
		num, unit = v[:i], strings.TrimSpace(v[i:])
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f < 0 {
		return 0, errors.New("want a non-negative number of milliseconds, or a number and a unit (us, ms, s, min, h, d)")
	}
	scale := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second, "min": time.Minute, "h": time.Hour, "d": 24 * time.Hour}[unit]
	if scale == 0 {
		return 0, fmt.Errorf("unknown unit %q (us, ms, s, min, h, d)", unit)
	}
	d := time.Duration(f * float64(scale))
	if d > time.Duration(1<<31-1)*time.Millisecond {
		return 0, errors.New("too large")
	}
	return d, nil
}

// cappedTimeout is the statement_timeout a client runs with: what it asked
// for (set; 0 disables), capped by its tenant's limit (0: none). It
// returns milliseconds as text, or "" for the server's default.
func cappedTimeout(asked string, set bool, limit time.Duration) string {
	if limit <= 0 {
		if !set {
			return ""
		}
		d, err := parseDuration(asked)
		if err != nil {
			return ""
		}
		return strconv.FormatInt(d.Milliseconds(), 10)
	}
	if set {
		if d, err := parseDuration(asked); err == nil && d > 0 && d < limit {
			return strconv.FormatInt(d.Milliseconds(), 10)
		}
	}
	return strconv.FormatInt(limit.Milliseconds(), 10)
}
