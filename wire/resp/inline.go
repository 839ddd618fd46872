package resp

import "bytes"

// readInline parses an inline command: one line up to LF, a CR before the LF
// dropped, split by splitInline. done is false for a line without arguments,
// which is skipped.
func (r *Reader) readInline() (cmd Command, done bool, err error) {
	for {
		data := r.b.unread()
		start := r.seen
		if i := bytes.IndexByte(data[start:], '\n'); i >= 0 {
			nl := start + i
			r.seen = 0
			if nl > r.lim.MaxInlineLen {
				return Command{}, false, ErrTooBigInlineRequest
			}
			line := data[:nl]
			if nl > 0 && line[nl-1] == '\r' {
				line = line[:nl-1]
			}
			if bytes.IndexByte(line, 0) >= 0 {
				return Command{}, false, ErrInlineNUL
			}
			args, ok := splitInline(line, r.args[:0])
			r.args = args[:0]
			if !ok {
				return Command{}, false, ErrUnbalancedQuotes
			}
			r.b.r += nl + 1
			if len(args) == 0 {
				return Command{}, false, nil
			}
			return Command{Args: args, Inline: true}, true, nil
		}
		if len(data) > r.lim.MaxInlineLen {
			return Command{}, false, ErrTooBigInlineRequest
		}
		r.seen = len(data)
		if err := r.more(len(data) + 1); err != nil {
			return Command{}, false, err
		}
	}
}

// splitInline splits line into arguments in place, exactly as redis-server's
// sdssplitargs does, appending them to args; ok is false where sdssplitargs
// returns NULL ("unbalanced quotes"). line must not contain NUL, which ends
// the C string sdssplitargs reads.
//
// Blanks between arguments are C isspace (space, \t, \n, \v, \f, \r), but an
// unquoted argument ends only at space, \t, \n or \r. Double quotes take the
// escapes \n \r \t \b \a \xHH and \<any> for that byte; single quotes take
// only \'. Quotes may start mid-argument (a"b c" is "ab c"), a closing quote
// must be followed by a blank or the end of the line, and a pair of quotes
// with nothing between them is an empty argument. Unescaping only shrinks,
// so writing in place never overtakes reading.
func splitInline(line []byte, args [][]byte) (_ [][]byte, ok bool) {
	n := len(line)
	at := func(i int) byte { // *(p+k) with the string's terminating NUL
		if i < n {
			return line[i]
		}
		return 0
	}
	p := 0
	for {
		for p < n && isSpace(line[p]) {
			p++
		}
		if p == n {
			return args, true
		}
		start, w := p, p
		inq, insq := false, false
		for done := false; !done; {
			c := at(p)
			switch {
			case inq:
				switch {
				case c == '\\' && at(p+1) == 'x' && isHex(at(p+2)) && isHex(at(p+3)):
					line[w] = unhex(line[p+2])<<4 | unhex(line[p+3])
					w++
					p += 3
				case c == '\\' && at(p+1) != 0:
					p++
					switch c = line[p]; c {
					case 'n':
						c = '\n'
					case 'r':
						c = '\r'
					case 't':
						c = '\t'
					case 'b':
						c = '\b'
					case 'a':
						c = '\a'
					}
					line[w] = c
					w++
				case c == '"':
					if at(p+1) != 0 && !isSpace(at(p+1)) {
						return args, false
					}
					done = true
				case c == 0:
					return args, false
				default:
					line[w] = c
					w++
				}
			case insq:
				switch {
				case c == '\\' && at(p+1) == '\'':
					p++
					line[w] = '\''
					w++
				case c == '\'':
					if at(p+1) != 0 && !isSpace(at(p+1)) {
						return args, false
					}
					done = true
				case c == 0:
					return args, false
				default:
					line[w] = c
					w++
				}
			default:
				switch c {
				case ' ', '\n', '\r', '\t', 0:
					done = true
				case '"':
					inq = true
				case '\'':
					insq = true
				default:
					line[w] = c
					w++
				}
			}
			if p < n {
				p++
			}
		}
		args = append(args, line[start:w:w])
	}
}

// isSpace is C isspace in the "C" locale, which redis-server keeps for
// LC_CTYPE.
func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c >= 'a':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}
