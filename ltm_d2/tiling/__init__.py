"""
Images larger than the network input (aerial orthomosaics, slides) cut into overlapping square
tiles, in pixels of the original image (INPUT.TILING.*, keys in ltm_d2/config.py):

- cutting (:mod:`.cutting`): the windows of an image, and in training every record of an image
  larger than a tile becomes one record per tile, with its boxes cut to the tile;
- reading (:mod:`.reading`): the training mapper (data/mapper.py) reads a tile record's pixels
  through :func:`.reading.read_tile`, which keeps the decoded images so that the tiles of one
  image are cut from one decoding; PIL's decompression-bomb limit
  (data/validation.py :func:`large_images_allowed`) is lifted for this project's reads with
  tiling, which is for images that large; without tiling, an image over it is refused
  (:func:`.reading.check_image_pixels`), since read whole it would be shrunk to the network's
  input;
- prediction (:mod:`.prediction`): the test loader does not resize the image
  (:func:`.prediction.tiled_test_mapper`); :class:`.prediction.TiledDetector` detects on its
  tiles and merges their detections (Trainer.test, demo/demo.py).

Built on Detectron2's own pieces (DatasetMapper, its test resize, batched NMS) rather than SAHI,
which loads Detectron2 models through Detectron2's plain `get_cfg`: that config refuses this
project's MODEL.LTM keys. The package's modules are imported by path (``ltm_d2.tiling.cutting``):
:mod:`.prediction` builds on data/mapper.py, which itself reads tiles through :mod:`.reading`.
"""
