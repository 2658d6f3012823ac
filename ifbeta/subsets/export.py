from ifbeta.subsets.files import export_imagefolder, zip_bytes  # noqa: F401  TEMP
