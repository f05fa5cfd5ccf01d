"""Labels: QR codes of handles' public URLs and PDF sheets of labels to print (``/api/qr``, ``/api/labels``)."""
