// A labelled grid of generations that differ in one or two settings (the web UIs' X/Y plot):
// the same seeds under negative prompts A, B and C, a negative's weight from 0.5 to 1.5, CFG
// against NAG. The cells are a batch on one loaded model, sharing prompt encodings.

import Foundation

/// Cells in rows and columns, each one generation, with the labels that say how they differ.
public struct ComparisonGrid: Sendable {
  /// The label left of each row (all empty: no label column).
  public let rowLabels: [String]
  /// The label above each column.
  public let columnLabels: [String]
  /// Row after row, `rowLabels.count × columnLabels.count` jobs.
  public let cells: [BatchJob]
  /// The settings every cell shares, printed under the grid.
  public let legend: String

  /// - Throws: `PipelineError.invalidArgument` when the cell count does not match the labels.
  public init(rowLabels: [String], columnLabels: [String], cells: [BatchJob], legend: String)
    throws(PipelineError)
  {
    guard !rowLabels.isEmpty, !columnLabels.isEmpty,
      cells.count == rowLabels.count * columnLabels.count
    else {
      throw .invalidArgument(
        name: "cells",
        reason:
          "\(cells.count) cells for \(rowLabels.count) rows and \(columnLabels.count) columns")
    }
    self.rowLabels = rowLabels
    self.columnLabels = columnLabels
    self.cells = cells
    self.legend = legend
  }

  /// Generates every cell with `runner` and lays them out. With `cellsFolder`, each cell is
  /// also written there as `<job name>.png`, and cells already there are read instead of
  /// generated again.
  /// - Throws: the first failing cell's error (`PipelineError.invalidArgument` naming the cell
  ///   for a cell image of another size), `.cancelled` when cancelled.
  public func render(
    with runner: BatchRunner, cellsInto cellsFolder: URL? = nil,
    progress: ((GenerationProgress) -> Bool)? = nil,
    report: (_ position: Int, _ job: BatchJob, _ outcome: BatchOutcome) -> Void = { _, _, _ in }
  ) throws(PipelineError) -> RGBImage {
    var images = [RGBImage?](repeating: nil, count: cells.count)
    var failure: PipelineError?
    _ = try runner.run(cells, into: cellsFolder, progress: progress) { position, job, outcome in
      report(position, job, outcome)
      switch outcome {
      case .finished(let result, _, _): images[position] = result.image
      case .skipped: break
      case .failed(let error): failure = failure ?? error
      }
    }
    if let failure { throw failure }
    // A cell is skipped only when its file is in the folder: read it from there.
    var laidOut: [RGBImage] = []
    for (position, image) in images.enumerated() {
      if let image {
        laidOut.append(image)
      } else if let cellsFolder {
        laidOut.append(
          try RGBImage(contentsOf: BatchRunner.file(of: cells[position], in: cellsFolder)))
      }
    }
    if let odd = laidOut.firstIndex(where: {
      $0.width != laidOut[0].width || $0.height != laidOut[0].height
    }) {
      throw .invalidArgument(
        name: "cells",
        reason: "cell \(cells[odd].name) is not the size of the first; a grid needs one size")
    }
    let rows = rowLabels.indices.map { row in
      Array(laidOut[(row * columnLabels.count)..<((row + 1) * columnLabels.count)])
    }
    return RGBImage.grid(
      rows, rowLabels: rowLabels, columnLabels: columnLabels, legend: legend)
  }
}
