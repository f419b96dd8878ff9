"""Which Basware attachments travel to BC, under which names: ATTACHMENT_CATEGORIES and
ATTACHMENT_REQUIRED as the settings loader reads them, and the flow's choice and naming."""
from __future__ import annotations

import pytest

from shared.core.errors import SettingsError
from shared.core.settings import load_settings
from shared.flows.invoices.attachments import bc_file_names, chosen_attachments
from shared.models.attachments import BaswareAttachment
from shared.models.basware import AccountingDocument
from tests.unit.test_settings import BASE


def settings(**env):
    return load_settings({**BASE, **env})


def test_by_default_only_the_original_image_travels_and_nothing_is_required():
    s = settings()
    assert s.attachment_categories == ("ORIGINALIMAGE",)
    assert not s.attachment_confidential and not s.attachment_required


@pytest.mark.parametrize("raw,categories,confidential", [
    ("originalimage, attachment", ("ORIGINALIMAGE", "ATTACHMENT"), False),
    ("ATTACHMENT,ORIGINALIMAGE,CONFIDENTIAL", ("ORIGINALIMAGE", "ATTACHMENT"), True),
    ("EXPORTEDEMAIL", ("EXPORTEDEMAIL",), False),
    ("NONE", (), False),
])
def test_categories_are_parsed(raw, categories, confidential):
    s = settings(ATTACHMENT_CATEGORIES=raw)
    assert (s.attachment_categories, s.attachment_confidential) == (categories, confidential)


@pytest.mark.parametrize("env,fragment", [
    ({"ATTACHMENT_CATEGORIES": "IMAGE"}, "ATTACHMENT_CATEGORIES must be a comma-separated list"),
    ({"ATTACHMENT_CATEGORIES": "NONE,ATTACHMENT"}, "ATTACHMENT_CATEGORIES"),
    ({"ATTACHMENT_REQUIRED": "maybe"}, "ATTACHMENT_REQUIRED must be true or false"),
    ({"ATTACHMENT_REQUIRED": "true", "ATTACHMENT_CATEGORIES": "ATTACHMENT"}, "does not copy ORIGINALIMAGE"),
])
def test_bad_attachment_settings_stop_with_a_message_naming_them(env, fragment):
    with pytest.raises(SettingsError, match=fragment):
        settings(**env)


def test_required_reads_the_usual_spellings():
    assert settings(ATTACHMENT_REQUIRED="True").attachment_required  # Bicep's string(true)
    assert not settings(ATTACHMENT_REQUIRED="0").attachment_required


def entry(name, category="ORIGINALIMAGE", confidential=False, code=None):
    return {"externalCode": code or name.encode().hex()[:32], "category": category, "filename": name,
            "isConfidential": confidential, "creationTime": "2026-11-19T09:28:19.093Z"}


def test_the_choice_follows_the_categories_and_keeps_confidential_ones_back():
    doc = AccountingDocument.model_validate({"invoiceId": "i1", "attachments": [
        entry("scan.pdf"), entry("note.pdf", "ATTACHMENT"), entry("hr.pdf", "ATTACHMENT", True),
        entry("mail.eml", "EXPORTEDEMAIL")]})
    chosen, held = chosen_attachments(doc, settings(ATTACHMENT_CATEGORIES="ORIGINALIMAGE,ATTACHMENT"))
    assert [a.filename for a in chosen] == ["scan.pdf", "note.pdf"] and [a.filename for a in held] == ["hr.pdf"]
    chosen, held = chosen_attachments(doc, settings(ATTACHMENT_CATEGORIES="ATTACHMENT,CONFIDENTIAL"))
    assert [a.filename for a in chosen] == ["note.pdf", "hr.pdf"] and held == []
    assert chosen_attachments(doc, settings(ATTACHMENT_CATEGORIES="NONE")) == ([], [])


def test_bc_names_are_basware_names_made_unique_per_invoice():
    atts = [BaswareAttachment.model_validate(entry(n, code=str(i))) for i, n in
            enumerate(["Image.jpg", "image.JPG", "Image.jpg", "", "README"])]
    atts.append(BaswareAttachment.model_validate({**entry("README", code="x")}))
    assert bc_file_names(atts) == ["Image.jpg", "image (2).JPG", "Image (3).jpg", "attachment-3", "README",
                                   "README (2)"]
