// Package bme280 reads a Bosch BME280 (temperature, pressure, humidity) over
// I²C through periph's bmxx80 driver, and reports it as a drivers.Env.
//
// It also accepts a BMP280, the humidity-less sibling that is often sold on
// "BME280" breakout boards: its readings carry Chip "BMP280" and no humidity
// (nil, never 0).
//
// The package never initialises the host (host.Init); the caller opens the
// bus and owns it.
//
// # Datasheets
//
// BME280: https://www.bosch-sensortec.com/media/boschsensortec/downloads/datasheets/bst-bme280-ds002.pdf
// BMP280: https://www.bosch-sensortec.com/media/boschsensortec/downloads/datasheets/bst-bmp280-ds001.pdf
package bme280
