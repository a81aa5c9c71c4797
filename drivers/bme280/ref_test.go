package bme280

import "math"

// calib holds the trimming parameters named as in the datasheet (dig_T1…).
type calib struct {
	T1                             uint16
	T2, T3                         int16
	P1                             uint16
	P2, P3, P4, P5, P6, P7, P8, P9 int16
	H1, H3                         uint8
	H2, H4, H5                     int16
	H6                             int8
}

// parseCalib decodes registers 0x88…0xA1 and 0xE1…0xE7 (datasheet table 16).
func parseCalib(tp [26]byte, h [7]byte) calib {
	le := func(i int) uint16 { return uint16(tp[i]) | uint16(tp[i+1])<<8 }
	return calib{
		T1: le(0), T2: int16(le(2)), T3: int16(le(4)),
		P1: le(6), P2: int16(le(8)), P3: int16(le(10)), P4: int16(le(12)), P5: int16(le(14)),
		P6: int16(le(16)), P7: int16(le(18)), P8: int16(le(20)), P9: int16(le(22)),
		H1: tp[25],
		H2: int16(uint16(h[0]) | uint16(h[1])<<8),
		H3: h[2],
		// H4 = 0xE4[7:0] / 0xE5[3:0]; H5 = 0xE5[7:4] / 0xE6[7:0] (12-bit signed).
		H4: int16(int8(h[3]))<<4 | int16(h[4]&0x0F),
		H5: int16(int8(h[5]))<<4 | int16(h[4]>>4),
		H6: int8(h[6]),
	}
}

// compensate is the datasheet's double-precision reference (section 8.1),
// written independently of bmxx80, which uses the integer variant (8.2).
func (c calib) compensate(adcT, adcP, adcH int32) (tempC, pressHPa, hum float64) {
	v1 := (float64(adcT)/16384 - float64(c.T1)/1024) * float64(c.T2)
	d := float64(adcT)/131072 - float64(c.T1)/8192
	v2 := d * d * float64(c.T3)
	tFine := v1 + v2
	tempC = tFine / 5120

	v1 = tFine/2 - 64000
	v2 = v1 * v1 * float64(c.P6) / 32768
	v2 += v1 * float64(c.P5) * 2
	v2 = v2/4 + float64(c.P4)*65536
	v1 = (float64(c.P3)*v1*v1/524288 + float64(c.P2)*v1) / 524288
	v1 = (1 + v1/32768) * float64(c.P1)
	if v1 != 0 {
		p := 1048576 - float64(adcP)
		p = (p - v2/4096) * 6250 / v1
		v1 = float64(c.P9) * p * p / 2147483648
		v2 = p * float64(c.P8) / 32768
		p += (v1 + v2 + float64(c.P7)) / 16
		pressHPa = p / 100
	}

	h := tFine - 76800
	h = (float64(adcH) - (float64(c.H4)*64 + float64(c.H5)/16384*h)) *
		(float64(c.H2) / 65536 * (1 + float64(c.H6)/67108864*h*(1+float64(c.H3)/67108864*h)))
	h *= 1 - float64(c.H1)*h/524288
	hum = math.Min(math.Max(h, 0), 100)
	return tempC, pressHPa, hum
}

// rawRegs encodes ADC values as registers 0xF7…0xFE (press, temp: 20 bits
// MSB first; hum: 16 bits MSB first).
func rawRegs(adcT, adcP, adcH int32) []byte {
	return []byte{
		byte(adcP >> 12), byte(adcP >> 4), byte(adcP<<4) & 0xF0,
		byte(adcT >> 12), byte(adcT >> 4), byte(adcT<<4) & 0xF0,
		byte(adcH >> 8), byte(adcH),
	}
}
