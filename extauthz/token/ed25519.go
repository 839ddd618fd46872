package token

import (
	"crypto/ed25519"
	"crypto/sha512"
	"crypto/subtle"
	"sync"

	"filippo.io/edwards25519"
	"filippo.io/edwards25519/field"
)

// Ed25519 verification checks [S]B = R + [k]A for the signature (R, S),
// k = SHA-512(R || A || message). crypto/ed25519 computes [S]B − [k]A with
// one double-and-add over both scalars: about 255 doublings, whatever the
// key. The public key A of a verification key never changes, so edKey
// tables its multiples once, as is done for the base point B: then each
// product is about 50 additions of table entries and no doubling at all,
// about a third of the field multiplications. The equation, the checks
// before it (S canonical, the top bits of S clear, A a valid point) and
// the comparison of encodings after it are crypto/ed25519's, so the two
// accept exactly the same signatures (the tests compare them).

// window is the width in bits of one signed digit of a scalar.
const (
	window    = 5
	digits    = (253+window-1)/window + 1 // scalars are below 2^253; one more for the last carry
	multiples = 1 << (window - 1)         // a digit is in [-16, 15]: tables hold 1..16 times a point
)

// affineCached is a point as (y+x, y−x, 2dxy), ready to be added to one in
// extended coordinates (edwards25519's affineCached).
type affineCached struct {
	yPlusX, yMinusX, t2d field.Element
}

// fixedBaseTable holds j·32^i·P for j in 1..16 and every digit position i.
type fixedBaseTable [digits][multiples]affineCached

// edKey is an Ed25519 public key with its table.
type edKey struct {
	pub   [ed25519.PublicKeySize]byte
	valid bool // pub encodes a point; if not, no signature verifies
	table *fixedBaseTable
}

func newEdKey(pub []byte) *edKey {
	k := &edKey{}
	copy(k.pub[:], pub)
	A, err := new(edwards25519.Point).SetBytes(pub)
	if err != nil {
		return k
	}
	k.valid, k.table = true, newFixedBaseTable(A)
	return k
}

// d2 is 2d, d = −121665/121666 the curve constant.
var d2 = func() *field.Element {
	d, _ := new(field.Element).SetBytes([]byte{
		0xa3, 0x78, 0x59, 0x13, 0xca, 0x4d, 0xeb, 0x75, 0xab, 0xd8, 0x41, 0x41, 0x4d, 0x0a, 0x70, 0x00,
		0x98, 0xe8, 0x79, 0x77, 0x79, 0x40, 0xc7, 0x8c, 0x73, 0xfe, 0x6f, 0x2b, 0xee, 0x6c, 0x03, 0x52})
	return new(field.Element).Add(d, d)
}()

var (
	baseTableOnce sync.Once
	baseTable     *fixedBaseTable
)

func basePointTable() *fixedBaseTable {
	baseTableOnce.Do(func() { baseTable = newFixedBaseTable(edwards25519.NewGeneratorPoint()) })
	return baseTable
}

func newFixedBaseTable(p *edwards25519.Point) *fixedBaseTable {
	t := new(fixedBaseTable)
	base := new(edwards25519.Point).Set(p)
	cur := new(edwards25519.Point)
	for i := range t {
		cur.Set(base)
		for j := range t[i] {
			if j > 0 {
				cur.Add(cur, base)
			}
			t[i][j].fromPoint(cur)
		}
		base.Add(cur, cur) // 2·16·base = 32·base
	}
	return t
}

func (c *affineCached) fromPoint(p *edwards25519.Point) {
	X, Y, Z, T := p.ExtendedCoordinates()
	var zInv field.Element
	zInv.Invert(Z)
	c.yPlusX.Add(Y, X)
	c.yPlusX.Multiply(&c.yPlusX, &zInv)
	c.yMinusX.Subtract(Y, X)
	c.yMinusX.Multiply(&c.yMinusX, &zInv)
	c.t2d.Multiply(T, d2)
	c.t2d.Multiply(&c.t2d, &zInv)
}

// signedDigits writes s (32 bytes, little-endian, below 2^253) as digits
// d_i in [-16, 15] with s = Σ d_i·32^i.
func signedDigits(s []byte, d *[digits]int8) {
	carry := 0
	for i := range d {
		bit := i * window
		v := 0
		if bit < 256 {
			w := uint(s[bit/8])
			if bit/8+1 < 32 {
				w |= uint(s[bit/8+1]) << 8
			}
			v = int(w>>(bit%8)) & (1<<window - 1)
		}
		v += carry
		carry = 0
		if v >= multiples {
			v -= 1 << window
			carry = 1
		}
		d[i] = int8(v)
	}
}

// extended is a point in extended coordinates (X:Y:Z:T), x = X/Z, y = Y/Z,
// xy = T/Z.
type extended struct{ x, y, z, t field.Element }

// add sets p = p + sign·q, for sign ±1 (the formulas of edwards25519's
// projP1xP1.AddAffine and SubAffine, then the conversion back to extended
// coordinates).
func (p *extended) add(q *affineCached, negative bool) {
	var yPlusX, yMinusX, pp, mm, tt2d, z2 field.Element
	yPlusX.Add(&p.y, &p.x)
	yMinusX.Subtract(&p.y, &p.x)
	if negative {
		pp.Multiply(&yPlusX, &q.yMinusX)
		mm.Multiply(&yMinusX, &q.yPlusX)
	} else {
		pp.Multiply(&yPlusX, &q.yPlusX)
		mm.Multiply(&yMinusX, &q.yMinusX)
	}
	tt2d.Multiply(&p.t, &q.t2d)
	z2.Add(&p.z, &p.z)
	var X, Y, Z, T field.Element
	X.Subtract(&pp, &mm)
	Y.Add(&pp, &mm)
	if negative {
		Z.Subtract(&z2, &tt2d)
		T.Add(&z2, &tt2d)
	} else {
		Z.Add(&z2, &tt2d)
		T.Subtract(&z2, &tt2d)
	}
	p.x.Multiply(&X, &T)
	p.y.Multiply(&Y, &Z)
	p.z.Multiply(&Z, &T)
	p.t.Multiply(&X, &Y)
}

// addDigit adds d·(table's point at position i); d may be zero or negative.
func (p *extended) addDigit(t *fixedBaseTable, i int, d int8, negate bool) {
	switch {
	case d > 0:
		p.add(&t[i][d-1], negate)
	case d < 0:
		p.add(&t[i][-d-1], !negate)
	}
}

// verify reports whether sig is a valid Ed25519 signature of msg by k, as
// crypto/ed25519.Verify does.
func (k *edKey) verify(msg, sig []byte) bool {
	if !k.valid || len(sig) != ed25519.SignatureSize || sig[63]&224 != 0 {
		return false
	}
	S, err := edwards25519.NewScalar().SetCanonicalBytes(sig[32:])
	if err != nil {
		return false
	}
	h := sha512.New()
	h.Write(sig[:32])
	h.Write(k.pub[:])
	h.Write(msg)
	var digest [sha512.Size]byte
	kh, _ := edwards25519.NewScalar().SetUniformBytes(h.Sum(digest[:0]))

	var sd, kd [digits]int8
	signedDigits(S.Bytes(), &sd)
	signedDigits(kh.Bytes(), &kd)
	B := basePointTable()
	// R' = [S]B − [k]A
	var r extended
	r.y.One()
	r.z.One()
	for i := range digits {
		r.addDigit(B, i, sd[i], false)
		r.addDigit(k.table, i, kd[i], true)
	}
	var zInv, x, y field.Element
	zInv.Invert(&r.z)
	x.Multiply(&r.x, &zInv)
	y.Multiply(&r.y, &zInv)
	var enc [32]byte
	copy(enc[:], y.Bytes())
	enc[31] |= byte(x.IsNegative() << 7)
	return subtle.ConstantTimeCompare(enc[:], sig[:32]) == 1
}
