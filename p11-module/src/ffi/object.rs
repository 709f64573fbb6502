//! Object management (PKCS#11 3.0 §5.7).

use keyferry_core::token::Module;
use keyferry_core::{Error, Result};
use pkcs11_sys::*;

use crate::ffi::convert::{in_template, out, out_attributes};
use crate::ffi::export;

export! {
    fn C_CreateObject(hSession: CK_SESSION_HANDLE, pTemplate: CK_ATTRIBUTE_PTR, ulCount: CK_ULONG, phObject: CK_OBJECT_HANDLE_PTR) => create_object;
    fn C_CopyObject(hSession: CK_SESSION_HANDLE, hObject: CK_OBJECT_HANDLE, pTemplate: CK_ATTRIBUTE_PTR, ulCount: CK_ULONG, phNewObject: CK_OBJECT_HANDLE_PTR) => copy_object;
    fn C_DestroyObject(hSession: CK_SESSION_HANDLE, hObject: CK_OBJECT_HANDLE) => destroy_object;
    fn C_GetObjectSize(hSession: CK_SESSION_HANDLE, hObject: CK_OBJECT_HANDLE, pulSize: CK_ULONG_PTR) => get_object_size;
    fn C_GetAttributeValue(hSession: CK_SESSION_HANDLE, hObject: CK_OBJECT_HANDLE, pTemplate: CK_ATTRIBUTE_PTR, ulCount: CK_ULONG) => get_attribute_value;
    fn C_SetAttributeValue(hSession: CK_SESSION_HANDLE, hObject: CK_OBJECT_HANDLE, pTemplate: CK_ATTRIBUTE_PTR, ulCount: CK_ULONG) => set_attribute_value;
    fn C_FindObjectsInit(hSession: CK_SESSION_HANDLE, pTemplate: CK_ATTRIBUTE_PTR, ulCount: CK_ULONG) => find_objects_init;
    fn C_FindObjects(hSession: CK_SESSION_HANDLE, phObject: CK_OBJECT_HANDLE_PTR, ulMaxObjectCount: CK_ULONG, pulObjectCount: CK_ULONG_PTR) => find_objects;
    fn C_FindObjectsFinal(hSession: CK_SESSION_HANDLE) => find_objects_final;
}

unsafe fn create_object(
    module: &Module,
    session: CK_SESSION_HANDLE,
    template: CK_ATTRIBUTE_PTR,
    count: CK_ULONG,
    object: CK_OBJECT_HANDLE_PTR,
) -> Result<()> {
    // SAFETY: the caller's promise covers every pointer.
    let (object, template) = unsafe { (out(object)?, in_template(template, count)?) };
    *object = module.create_object(session, &template)?;
    Ok(())
}

unsafe fn copy_object(
    module: &Module,
    session: CK_SESSION_HANDLE,
    source: CK_OBJECT_HANDLE,
    template: CK_ATTRIBUTE_PTR,
    count: CK_ULONG,
    object: CK_OBJECT_HANDLE_PTR,
) -> Result<()> {
    // SAFETY: the caller's promise covers every pointer.
    let (object, template) = unsafe { (out(object)?, in_template(template, count)?) };
    *object = module.copy_object(session, source, &template)?;
    Ok(())
}

unsafe fn destroy_object(
    module: &Module,
    session: CK_SESSION_HANDLE,
    object: CK_OBJECT_HANDLE,
) -> Result<()> {
    module.destroy_object(session, object)
}

unsafe fn get_object_size(
    module: &Module,
    session: CK_SESSION_HANDLE,
    object: CK_OBJECT_HANDLE,
    size: CK_ULONG_PTR,
) -> Result<()> {
    // SAFETY: NULL or valid for one CK_ULONG.
    let size = unsafe { out(size) }?;
    *size = module.object(session, object)?.size() as CK_ULONG;
    Ok(())
}

unsafe fn get_attribute_value(
    module: &Module,
    session: CK_SESSION_HANDLE,
    object: CK_OBJECT_HANDLE,
    template: CK_ATTRIBUTE_PTR,
    count: CK_ULONG,
) -> Result<()> {
    if template.is_null() && count != 0 {
        return Err(Error::ArgumentsBad("NULL template with a count"));
    }
    let object = module.object(session, object)?;
    // SAFETY: the caller's promise covers the template and its buffers.
    unsafe { out_attributes(&object, template, count) }
}

unsafe fn set_attribute_value(
    module: &Module,
    session: CK_SESSION_HANDLE,
    object: CK_OBJECT_HANDLE,
    template: CK_ATTRIBUTE_PTR,
    count: CK_ULONG,
) -> Result<()> {
    // SAFETY: the caller's promise covers the template.
    let template = unsafe { in_template(template, count) }?;
    module.set_attributes(session, object, &template)
}

unsafe fn find_objects_init(
    module: &Module,
    session: CK_SESSION_HANDLE,
    template: CK_ATTRIBUTE_PTR,
    count: CK_ULONG,
) -> Result<()> {
    // SAFETY: the caller's promise covers the template.
    let template = unsafe { in_template(template, count) }?;
    module.find_init(session, &template)
}

unsafe fn find_objects(
    module: &Module,
    session: CK_SESSION_HANDLE,
    objects: CK_OBJECT_HANDLE_PTR,
    max: CK_ULONG,
    count: CK_ULONG_PTR,
) -> Result<()> {
    // SAFETY: NULL or valid for one CK_ULONG.
    let count = unsafe { out(count) }?;
    if objects.is_null() {
        return Err(Error::ArgumentsBad("NULL object list"));
    }
    let max = usize::try_from(max).map_err(|_| Error::ArgumentsBad("count"))?;
    let found = module.find_next(session, max)?;
    // SAFETY: non-NULL and valid for `max >= found.len()` handles by the caller's promise.
    unsafe { std::ptr::copy_nonoverlapping(found.as_ptr(), objects, found.len()) };
    *count = found.len() as CK_ULONG;
    Ok(())
}

unsafe fn find_objects_final(module: &Module, session: CK_SESSION_HANDLE) -> Result<()> {
    module.find_final(session)
}
