// Pictures made from generated images: the side-by-side comparison of a run without and with
// the negative prompt (with a caption strip), labelled grids of many runs, and a heat map of
// where two differ.

/// A 5×7 pixel font for captions: capitals, digits and common punctuation. Lower-case letters
/// are drawn as capitals and any other character as "?", which keeps the font small and every
/// caption legible.
enum CaptionFont {
  static let width = 5
  static let height = 7

  /// Rows top to bottom, "#" = ink.
  static let glyphs: [Character: [String]] = [
    "A": [" ### ", "#   #", "#   #", "#####", "#   #", "#   #", "#   #"],
    "B": ["#### ", "#   #", "#   #", "#### ", "#   #", "#   #", "#### "],
    "C": [" ### ", "#   #", "#    ", "#    ", "#    ", "#   #", " ### "],
    "D": ["#### ", "#   #", "#   #", "#   #", "#   #", "#   #", "#### "],
    "E": ["#####", "#    ", "#    ", "#### ", "#    ", "#    ", "#####"],
    "F": ["#####", "#    ", "#    ", "#### ", "#    ", "#    ", "#    "],
    "G": [" ### ", "#   #", "#    ", "# ###", "#   #", "#   #", " ####"],
    "H": ["#   #", "#   #", "#   #", "#####", "#   #", "#   #", "#   #"],
    "I": [" ### ", "  #  ", "  #  ", "  #  ", "  #  ", "  #  ", " ### "],
    "J": ["  ###", "   # ", "   # ", "   # ", "   # ", "#  # ", " ##  "],
    "K": ["#   #", "#  # ", "# #  ", "##   ", "# #  ", "#  # ", "#   #"],
    "L": ["#    ", "#    ", "#    ", "#    ", "#    ", "#    ", "#####"],
    "M": ["#   #", "## ##", "# # #", "# # #", "#   #", "#   #", "#   #"],
    "N": ["#   #", "##  #", "# # #", "#  ##", "#   #", "#   #", "#   #"],
    "O": [" ### ", "#   #", "#   #", "#   #", "#   #", "#   #", " ### "],
    "P": ["#### ", "#   #", "#   #", "#### ", "#    ", "#    ", "#    "],
    "Q": [" ### ", "#   #", "#   #", "#   #", "# # #", "#  # ", " ## #"],
    "R": ["#### ", "#   #", "#   #", "#### ", "# #  ", "#  # ", "#   #"],
    "S": [" ####", "#    ", "#    ", " ### ", "    #", "    #", "#### "],
    "T": ["#####", "  #  ", "  #  ", "  #  ", "  #  ", "  #  ", "  #  "],
    "U": ["#   #", "#   #", "#   #", "#   #", "#   #", "#   #", " ### "],
    "V": ["#   #", "#   #", "#   #", "#   #", "#   #", " # # ", "  #  "],
    "W": ["#   #", "#   #", "#   #", "# # #", "# # #", "## ##", "#   #"],
    "X": ["#   #", "#   #", " # # ", "  #  ", " # # ", "#   #", "#   #"],
    "Y": ["#   #", "#   #", " # # ", "  #  ", "  #  ", "  #  ", "  #  "],
    "Z": ["#####", "    #", "   # ", "  #  ", " #   ", "#    ", "#####"],
    "0": [" ### ", "#   #", "#  ##", "# # #", "##  #", "#   #", " ### "],
    "1": ["  #  ", " ##  ", "  #  ", "  #  ", "  #  ", "  #  ", " ### "],
    "2": [" ### ", "#   #", "    #", "   # ", "  #  ", " #   ", "#####"],
    "3": ["#####", "   # ", "  #  ", "   # ", "    #", "#   #", " ### "],
    "4": ["   # ", "  ## ", " # # ", "#  # ", "#####", "   # ", "   # "],
    "5": ["#####", "#    ", "#### ", "    #", "    #", "#   #", " ### "],
    "6": ["  ## ", " #   ", "#    ", "#### ", "#   #", "#   #", " ### "],
    "7": ["#####", "    #", "   # ", "  #  ", " #   ", " #   ", " #   "],
    "8": [" ### ", "#   #", "#   #", " ### ", "#   #", "#   #", " ### "],
    "9": [" ### ", "#   #", "#   #", " ####", "    #", "   # ", " ##  "],
    " ": ["     ", "     ", "     ", "     ", "     ", "     ", "     "],
    ".": ["     ", "     ", "     ", "     ", "     ", " ##  ", " ##  "],
    ",": ["     ", "     ", "     ", "     ", " ##  ", "  #  ", " #   "],
    ":": ["     ", " ##  ", " ##  ", "     ", " ##  ", " ##  ", "     "],
    ";": ["     ", " ##  ", " ##  ", "     ", " ##  ", "  #  ", " #   "],
    "!": ["  #  ", "  #  ", "  #  ", "  #  ", "  #  ", "     ", "  #  "],
    "?": [" ### ", "#   #", "    #", "   # ", "  #  ", "     ", "  #  "],
    "'": ["  #  ", "  #  ", " #   ", "     ", "     ", "     ", "     "],
    "\"": [" # # ", " # # ", "     ", "     ", "     ", "     ", "     "],
    "-": ["     ", "     ", "     ", "#####", "     ", "     ", "     "],
    "+": ["     ", "  #  ", "  #  ", "#####", "  #  ", "  #  ", "     "],
    "=": ["     ", "     ", "#####", "     ", "#####", "     ", "     "],
    "_": ["     ", "     ", "     ", "     ", "     ", "     ", "#####"],
    "/": ["    #", "    #", "   # ", "  #  ", " #   ", "#    ", "#    "],
    "(": ["   # ", "  #  ", " #   ", " #   ", " #   ", "  #  ", "   # "],
    ")": [" #   ", "  #  ", "   # ", "   # ", "   # ", "  #  ", " #   "],
    "[": [" ### ", " #   ", " #   ", " #   ", " #   ", " #   ", " ### "],
    "]": [" ### ", "   # ", "   # ", "   # ", "   # ", "   # ", " ### "],
    "%": ["##   ", "##  #", "   # ", "  #  ", " #   ", "#  ##", "   ##"],
    "#": [" # # ", " # # ", "#####", " # # ", "#####", " # # ", " # # "],
    "*": ["     ", "  #  ", "# # #", " ### ", "# # #", "  #  ", "     "],
    "&": [" ##  ", "#  # ", "# #  ", " #   ", "# # #", "#  # ", " ## #"],
    "<": ["   # ", "  #  ", " #   ", "#    ", " #   ", "  #  ", "   # "],
    ">": [" #   ", "  #  ", "   # ", "    #", "   # ", "  #  ", " #   "],
    "|": ["  #  ", "  #  ", "  #  ", "  #  ", "  #  ", "  #  ", "  #  "],
  ]

  static func glyph(_ character: Character) -> [String] {
    let upper = Character(character.uppercased())
    return glyphs[upper] ?? glyphs["?"] ?? []
  }
}

extension RGBImage {
  /// Draws `text` with its top-left corner at (x, y), each font pixel `scale`² image pixels;
  /// characters past the right edge are cut, and a cut text ends in "...".
  mutating func draw(
    _ text: String, x: Int, y: Int, maxWidth: Int, scale: Int, color: (UInt8, UInt8, UInt8)
  ) {
    let advance = (CaptionFont.width + 1) * scale
    var characters = Array(text)
    let fitting = max(0, maxWidth / advance)
    if characters.count > fitting {
      characters = Array(characters.prefix(max(0, fitting - 3))) + Array("...")
    }
    for (index, character) in characters.enumerated() {
      for (row, line) in CaptionFont.glyph(character).enumerated() {
        for (column, pixel) in line.enumerated() where pixel == "#" {
          for dy in 0..<scale {
            for dx in 0..<scale {
              let px = x + index * advance + column * scale + dx
              let py = y + row * scale + dy
              guard px >= 0, px < width, py >= 0, py < height else { continue }
              let offset = (py * width + px) * 3
              (pixels[offset], pixels[offset + 1], pixels[offset + 2]) = color
            }
          }
        }
      }
    }
  }

  /// `left` and `right` next to each other (the canvas is exactly twice as wide), above a
  /// caption strip: each image's label under it, and `caption` on a line below.
  /// Both images must have the same size.
  public static func sideBySide(
    _ left: RGBImage, _ right: RGBImage, leftLabel: String, rightLabel: String, caption: String
  ) -> RGBImage {
    precondition(
      left.width == right.width && left.height == right.height,
      "side-by-side images of different sizes")
    let scale = max(1, left.width / 256)
    let lineHeight = (CaptionFont.height + 4) * scale
    let margin = 2 * scale
    var canvas = RGBImage(
      width: 2 * left.width, height: left.height + 2 * lineHeight + margin, red: 24, green: 24,
      blue: 24)
    canvas.place(left, x: 0, y: 0)
    canvas.place(right, x: left.width, y: 0)
    let white: (UInt8, UInt8, UInt8) = (240, 240, 240)
    let labelY = left.height + margin + 2 * scale
    canvas.draw(
      leftLabel, x: margin, y: labelY, maxWidth: left.width - 2 * margin, scale: scale, color: white
    )
    canvas.draw(
      rightLabel, x: left.width + margin, y: labelY, maxWidth: left.width - 2 * margin,
      scale: scale, color: white)
    canvas.draw(
      caption, x: margin, y: labelY + lineHeight, maxWidth: canvas.width - 2 * margin, scale: scale,
      color: (170, 170, 170))
    return canvas
  }

  /// Copies `image` onto this one with its top-left corner at (x, y); it must fit.
  mutating func place(_ image: RGBImage, x: Int, y: Int) {
    precondition(x >= 0 && y >= 0 && x + image.width <= width && y + image.height <= height)
    for row in 0..<image.height {
      let source = row * image.width * 3
      let target = ((y + row) * width + x) * 3
      pixels.replaceSubrange(
        target..<(target + image.width * 3),
        with: image.pixels[source..<(source + image.width * 3)])
    }
  }

  /// `cells` (rows of equally sized images) as one labelled picture: each column's label above
  /// it, each row's label to its left (no label column when every row label is empty), and
  /// `legend` (the settings all cells share) in lines below, wrapped to the width.
  public static func grid(
    _ cells: [[RGBImage]], rowLabels: [String], columnLabels: [String], legend: String
  ) -> RGBImage {
    let first = cells[0][0]
    precondition(
      cells.count == rowLabels.count
        && cells.allSatisfy {
          $0.count == columnLabels.count
            && $0.allSatisfy { $0.width == first.width && $0.height == first.height }
        }, "grid cells of different sizes or counts")
    let scale = max(1, first.width / 256)
    let lineHeight = (CaptionFont.height + 4) * scale
    let margin = 2 * scale
    let advance = (CaptionFont.width + 1) * scale
    let labelWidth =
      rowLabels.allSatisfy(\.isEmpty)
      ? 0 : min(first.width, (rowLabels.map(\.count).max() ?? 0) * advance + 2 * margin)
    let gridWidth = labelWidth + columnLabels.count * first.width
    let legendLines = wrapped(legend, characters: max(1, (gridWidth - 2 * margin) / advance))
    var canvas = RGBImage(
      width: gridWidth,
      height: lineHeight + cells.count * first.height + legendLines.count * lineHeight + margin,
      red: 24, green: 24, blue: 24)
    let white: (UInt8, UInt8, UInt8) = (240, 240, 240)
    for (column, label) in columnLabels.enumerated() {
      canvas.draw(
        label, x: labelWidth + column * first.width + margin, y: 2 * scale,
        maxWidth: first.width - 2 * margin, scale: scale, color: white)
    }
    for (row, images) in cells.enumerated() {
      let y = lineHeight + row * first.height
      canvas.draw(
        rowLabels[row], x: margin, y: y + (first.height - CaptionFont.height * scale) / 2,
        maxWidth: labelWidth - 2 * margin, scale: scale, color: white)
      for (column, image) in images.enumerated() {
        canvas.place(image, x: labelWidth + column * first.width, y: y)
      }
    }
    for (index, line) in legendLines.enumerated() {
      canvas.draw(
        line, x: margin, y: lineHeight + cells.count * first.height + margin + index * lineHeight,
        maxWidth: gridWidth - 2 * margin, scale: scale, color: (170, 170, 170))
    }
    return canvas
  }

  /// `text` in lines of at most `characters`, broken at spaces where possible.
  static func wrapped(_ text: String, characters: Int) -> [String] {
    var lines: [String] = []
    var line = ""
    for word in text.split(separator: " ", omittingEmptySubsequences: false).map(String.init) {
      var word = word
      while word.count > characters {
        if !line.isEmpty { lines.append(line) }
        lines.append(String(word.prefix(characters)))
        word = String(word.dropFirst(characters))
        line = ""
      }
      if line.isEmpty {
        line = word
      } else if line.count + 1 + word.count <= characters {
        line += " " + word
      } else {
        lines.append(line)
        line = word
      }
    }
    if !line.isEmpty || lines.isEmpty { lines.append(line) }
    return lines
  }

  /// Where `a` and `b` differ: the mean absolute channel difference per pixel, scaled so the
  /// largest difference is full intensity, on a black → red → yellow → white ramp. Identical
  /// images give a black picture.
  public static func differenceHeatMap(_ a: RGBImage, _ b: RGBImage) -> RGBImage {
    precondition(
      a.width == b.width && a.height == b.height, "heat map of images of different sizes")
    let count = a.width * a.height
    var differences = [Float](repeating: 0, count: count)
    for i in 0..<count {
      var sum = 0
      for channel in 0..<3 {
        sum += abs(Int(a.pixels[i * 3 + channel]) - Int(b.pixels[i * 3 + channel]))
      }
      differences[i] = Float(sum) / 3
    }
    let largest = max(differences.max() ?? 0, 1)
    var pixels = [UInt8](repeating: 0, count: count * 3)
    for i in 0..<count {
      let v = differences[i] / largest * 3
      pixels[i * 3] = UInt8(255 * min(1, v))
      pixels[i * 3 + 1] = UInt8(255 * min(1, max(0, v - 1)))
      pixels[i * 3 + 2] = UInt8(255 * min(1, max(0, v - 2)))
    }
    return RGBImage(width: a.width, height: a.height, pixels: pixels)
  }
}
