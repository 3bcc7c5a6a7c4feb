//go:build !race

package reliability

// raceEnabled tells whether the tests run with the race detector.
const raceEnabled = false
