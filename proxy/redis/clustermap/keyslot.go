package clustermap

// KeySlot returns the hash slot of key as redis-server computes it
// (cluster.c keyHashSlot): CRC16 of the key, or of the first non-empty
// "{...}" hash tag in it, modulo 16384.
func KeySlot(key []byte) uint16 {
	if s := hashTag(key); s != nil {
		key = s
	}
	return crc16(key) & (Slots - 1)
}

// hashTag returns the text between the first '{' and the first '}' after
// it, when that is not empty; nil otherwise.
func hashTag(key []byte) []byte {
	for i, c := range key {
		if c != '{' {
			continue
		}
		for j := i + 1; j < len(key); j++ {
			if key[j] == '}' {
				if j == i+1 {
					return nil // "{}": the whole key is hashed
				}
				return key[i+1 : j]
			}
		}
		return nil
	}
	return nil
}

// crc16 is CRC-16/XMODEM (polynomial 0x1021, initial value 0), the CRC
// Redis Cluster uses (crc16.c).
func crc16(b []byte) uint16 {
	var crc uint16
	for _, c := range b {
		crc = crc<<8 ^ crc16Table[byte(crc>>8)^c]
	}
	return crc
}

var crc16Table = func() (t [256]uint16) {
	for i := range t {
		c := uint16(i) << 8
		for range 8 {
			if c&0x8000 != 0 {
				c = c<<1 ^ 0x1021
			} else {
				c <<= 1
			}
		}
		t[i] = c
	}
	return t
}()
