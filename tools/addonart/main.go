// Command addonart draws the add-on's icon.png (128×128) and logo.png
// (250×100): a meter face with a lightning bolt. Run it from the
// repository root: go run ./tools/addonart
package main

import (
	"image"
	"image/color"
	"image/png"
	"log"
	"os"
)

var (
	teal   = color.RGBA{0x0b, 0x72, 0x85, 0xff}
	white  = color.RGBA{0xff, 0xff, 0xff, 0xff}
	yellow = color.RGBA{0xfc, 0xc4, 0x19, 0xff}
	grey   = color.RGBA{0x34, 0x3a, 0x40, 0xff}
	clear  = color.RGBA{}
)

// roundRect fills a rectangle with rounded corners.
func roundRect(img *image.RGBA, x0, y0, x1, y1, r int, c color.RGBA) {
	for y := y0; y < y1; y++ {
		for x := x0; x < x1; x++ {
			dx, dy := 0, 0
			switch {
			case x < x0+r:
				dx = x0 + r - x
			case x >= x1-r:
				dx = x - (x1 - r - 1)
			}
			switch {
			case y < y0+r:
				dy = y0 + r - y
			case y >= y1-r:
				dy = y - (y1 - r - 1)
			}
			if dx*dx+dy*dy <= r*r {
				img.SetRGBA(x, y, c)
			}
		}
	}
}

// polygon fills a polygon (even-odd rule).
func polygon(img *image.RGBA, pts [][2]float64, c color.RGBA) {
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			px, py := float64(x)+0.5, float64(y)+0.5
			in := false
			for i, j := 0, len(pts)-1; i < len(pts); j, i = i, i+1 {
				a, d := pts[i], pts[j]
				if (a[1] > py) != (d[1] > py) && px < (d[0]-a[0])*(py-a[1])/(d[1]-a[1])+a[0] {
					in = !in
				}
			}
			if in {
				img.SetRGBA(x, y, c)
			}
		}
	}
}

// meter draws the symbol in a size×size square at (ox, oy).
func meter(img *image.RGBA, ox, oy, size int) {
	s := float64(size) / 128
	at := func(x, y float64) [2]float64 { return [2]float64{float64(ox) + x*s, float64(oy) + y*s} }
	roundRect(img, ox, oy, ox+size, oy+size, int(24*s), teal)
	roundRect(img, ox+int(20*s), oy+int(18*s), ox+int(108*s), oy+int(110*s), int(12*s), white)
	roundRect(img, ox+int(30*s), oy+int(28*s), ox+int(98*s), oy+int(50*s), int(4*s), grey)
	polygon(img, [][2]float64{at(70, 56), at(44, 86), at(62, 86), at(54, 106), at(84, 74), at(66, 74), at(76, 56)}, yellow)
}

func save(name string, img image.Image) {
	f, err := os.Create(name)
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	if err := png.Encode(f, img); err != nil {
		log.Fatal(err)
	}
}

func main() {
	icon := image.NewRGBA(image.Rect(0, 0, 128, 128))
	meter(icon, 0, 0, 128)
	save("addon/icon.png", icon)

	logo := image.NewRGBA(image.Rect(0, 0, 250, 100))
	for y := range 100 {
		for x := range 250 {
			logo.SetRGBA(x, y, clear)
		}
	}
	meter(logo, 5, 5, 90)
	// Three bars of rising height: readings over time.
	for i, h := range []int{30, 50, 70} {
		roundRect(logo, 115+i*42, 85-h, 145+i*42, 85, 5, []color.RGBA{grey, teal, yellow}[i])
	}
	save("addon/logo.png", logo)
}
