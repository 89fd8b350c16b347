"""Data in: MNIST, image files and the preprocessing that turns a real image into an MNIST digit.

* mnist.py: the four IDX files, read into uint8 tensors; the train/validation split; the download.
* sources.py: what `lenet predict` accepts (files, folders, patterns, URLs, stdin) read into grey pixels.
* urls.py: one http(s) download, bounded in bytes and total time, with a redirect policy.
* preprocess.py: a photo, scan or drawing of a digit made into the 28x28 image MNIST models expect.
* lighting.py: the lighting fit, the polarity test, the background map and the rank filters.
* order_stats.py: numpy's median and quantile, exactly, without numpy's float64 copy.
* shape_notes.py: "not a digit" notes (blobs, lines, dashes) on a prepared 28x28 image.
* digits.py: the 300 MNIST test digits shipped for `lenet export`'s offline parity check.

May import: numpy, Pillow, torch (MNIST only), and lenet_cli's top-level modules and utils/.
preprocess.py (with lighting.py, order_stats.py, shape_notes.py), sources.py and urls.py never import
torch: `lenet predict` with the bundled model runs without it.
"""
